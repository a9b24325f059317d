// The `ha` block of provider data (the Go provider's keys since v0.2): its JSON Schema, its type after validation and
// the names of the HA objects the provider manages for a machine request set. What is done with it against Proxmox
// (HA resources; PVE 9 rules or PVE 8 groups) lives in ha.ts.
import { LIMITS } from './limits.js';

export const HA_STATES = ['started', 'stopped', 'disabled', 'ignored'] as const;
export const HA_RESOURCE_AFFINITIES = ['negative', 'positive'] as const;

export interface HaConfig {
  /** Requested state of the HA resource; unset leaves PVE's default (`started`). */
  state?: (typeof HA_STATES)[number];
  comment?: string;
  max_restart?: number;
  max_relocate?: number;
  failback?: boolean;
  /** Existing PVE 9 HA rules the VM is added to. */
  rules: string[];
  /** Nodes of the per-set node-affinity rule (PVE 9) or HA group (PVE 8). */
  node_affinity_nodes: string[];
  node_affinity_strict: boolean;
  /** Direction of the per-set resource-affinity rule (PVE 9 only). */
  resource_affinity?: (typeof HA_RESOURCE_AFFINITIES)[number];
}

// pve-configid (pve-common JSONSchema.pm pve_verify_configid): a letter, then letters, digits, `-`, `_`; at least two
// characters. HA rule and group ids use this format (pve-ha-manager Tools.pm pve-ha-rule-id / pve-ha-group-id).
const CONFIG_ID_PATTERN = '^[A-Za-z][A-Za-z0-9_-]+$';
// pve-ha-node (Tools.pm): a host name label; no priority suffix here (the Go provider sends none).
const HA_NODE_PATTERN = '^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$';
// The resource's comment is written as one line of /etc/pve/ha/resources.cfg (a section config): no line breaks,
// and no other control characters either (tab allowed).
const HA_COMMENT_PATTERN = '^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$';

/** The `ha` property of the provider-data JSON Schema. */
export const haSchema = {
  type: 'object',
  title: 'High Availability',
  additionalProperties: false,
  description:
    'Register the VM as a Proxmox HA resource, and keep the machine set in a node-affinity and a resource-affinity ' +
    'rule (Proxmox VE 9) or a node-affinity HA group (Proxmox VE 8; resource_affinity and rules need 9).',
  properties: {
    state: { type: 'string', enum: [...HA_STATES], description: "Requested HA state (Proxmox's default: started)." },
    comment: {
      type: 'string',
      maxLength: LIMITS.comment.max,
      pattern: HA_COMMENT_PATTERN,
      description: 'Comment on the HA resource.',
    },
    max_restart: {
      type: 'integer',
      minimum: 0,
      maximum: LIMITS.max_restart.max,
      description: "Restart attempts on the current node (Proxmox's default: 1).",
    },
    max_relocate: {
      type: 'integer',
      minimum: 0,
      maximum: LIMITS.max_relocate.max,
      description: "Relocations once restarts are used up (Proxmox's default: 1).",
    },
    failback: { type: 'boolean', description: 'Move the VM back to its preferred node when that node returns.' },
    rules: {
      type: 'array',
      maxItems: LIMITS.rules.max,
      default: [],
      description: 'Existing Proxmox VE 9 HA rules to add the VM to.',
      items: { type: 'string', maxLength: LIMITS.ha_rule.max, pattern: CONFIG_ID_PATTERN },
    },
    node_affinity_nodes: {
      type: 'array',
      maxItems: LIMITS.node_affinity_nodes.max,
      default: [],
      description: "Nodes of the machine set's node-affinity rule (PVE 9) or HA group (PVE 8), created once per set.",
      items: { type: 'string', maxLength: LIMITS.node.max, pattern: HA_NODE_PATTERN },
    },
    node_affinity_strict: {
      type: 'boolean',
      default: false,
      description: 'The VMs may run only on node_affinity_nodes (strict rule / restricted group).',
    },
    resource_affinity: {
      type: 'string',
      enum: [...HA_RESOURCE_AFFINITIES],
      description: "The machine set's VMs on different nodes (negative) or together (positive); Proxmox VE 9 only.",
    },
  },
} as const;

/** What a pattern-checked `ha` field holds, for messages. */
export const HA_FIELD_NOUN: Record<string, string> = {
  rules: 'HA rule id (a letter, then letters, digits, - or _)',
  node_affinity_nodes: 'node name',
  comment: 'HA comment (control characters other than tab are not allowed)',
};

/** `omni-<set>-<suffix>`: the per-set rule (PVE 9) or group (PVE 8) name, as the Go provider derives it. */
export function haSetObjectName(setId: string, suffix: 'naff' | 'raff'): string {
  return `omni-${setId.replace(/[^A-Za-z0-9_-]/g, '-')}-${suffix}`;
}

/** Whether a rule or group name is one the provider derives for some set (never deleted unless it is ours by name). */
export function isHaSetObjectName(name: string): boolean {
  return /^omni-[A-Za-z0-9_-]+-(naff|raff)$/.test(name);
}
