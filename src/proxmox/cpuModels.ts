// What qemu-server accepts as the `cpu` of a VM (PVE/QemuServer/CPUConfig.pm `validate_vm_cpu_conf` and
// CPUFlags.pm), restated as facts: the CPU model names it knows without asking QEMU, the flags a VM-specific config
// may set, and the three refusals. Shared by the provider (validation before any write) and the simulator.

/**
 * Models qemu-server knows when pve-qemu does not ship `/usr/share/kvm/cpu-models-<arch>.json` (its hard-coded
 * list), per architecture. A node with a newer pve-qemu knows QEMU's full list, which contains these; ask the node
 * (`GET /nodes/{node}/capabilities/qemu/cpu`) when you can.
 */
export const QEMU_CPU_MODELS = {
  x86_64: [
    // Intel
    '486', 'pentium', 'pentium2', 'pentium3', 'coreduo', 'core2duo', 'Conroe', 'Penryn',
    'Nehalem', 'Nehalem-IBRS', 'Westmere', 'Westmere-IBRS', 'SandyBridge', 'SandyBridge-IBRS',
    'IvyBridge', 'IvyBridge-IBRS', 'Haswell', 'Haswell-IBRS', 'Haswell-noTSX', 'Haswell-noTSX-IBRS',
    'Broadwell', 'Broadwell-IBRS', 'Broadwell-noTSX', 'Broadwell-noTSX-IBRS',
    'Skylake-Client', 'Skylake-Client-IBRS', 'Skylake-Client-noTSX-IBRS', 'Skylake-Client-v4',
    'Skylake-Server', 'Skylake-Server-IBRS', 'Skylake-Server-noTSX-IBRS', 'Skylake-Server-v4', 'Skylake-Server-v5',
    'Cascadelake-Server', 'Cascadelake-Server-v2', 'Cascadelake-Server-noTSX', 'Cascadelake-Server-v4',
    'Cascadelake-Server-v5', 'Cooperlake', 'Cooperlake-v2', 'KnightsMill',
    'Icelake-Client', 'Icelake-Client-noTSX',
    'Icelake-Server', 'Icelake-Server-noTSX', 'Icelake-Server-v3', 'Icelake-Server-v4', 'Icelake-Server-v5',
    'Icelake-Server-v6', 'Icelake-Server-v7',
    'SapphireRapids', 'SapphireRapids-v2', 'SapphireRapids-v3', 'SapphireRapids-v4',
    'GraniteRapids', 'GraniteRapids-v2', 'GraniteRapids-v3',
    'SierraForest', 'SierraForest-v2', 'SierraForest-v3', 'ClearwaterForest',
    // AMD
    'athlon', 'phenom', 'Opteron_G1', 'Opteron_G2', 'Opteron_G3', 'Opteron_G4', 'Opteron_G5',
    'EPYC', 'EPYC-IBPB', 'EPYC-v3', 'EPYC-v4', 'EPYC-v5',
    'EPYC-Rome', 'EPYC-Rome-v2', 'EPYC-Rome-v3', 'EPYC-Rome-v4', 'EPYC-Rome-v5',
    'EPYC-Milan', 'EPYC-Milan-v2', 'EPYC-Milan-v3', 'EPYC-Genoa', 'EPYC-Genoa-v2', 'EPYC-Turin',
    // generic (vendor of the host)
    'kvm32', 'kvm64', 'qemu32', 'qemu64', 'max',
  ],
  aarch64: [
    'a64fx', 'cortex-a35', 'cortex-a53', 'cortex-a55', 'cortex-a57', 'cortex-a710', 'cortex-a72', 'cortex-a76',
    'neoverse-n1', 'neoverse-n2', 'neoverse-v1', 'max',
  ],
} as const;

/** qemu-server's own models (flag sets on top of qemu64); x86_64 only. */
export const PVE_BUILTIN_CPU_MODELS = ['x86-64-v2', 'x86-64-v2-AES', 'x86-64-v3', 'x86-64-v4'] as const;

/** Flags a VM's own cpu config may set (CPUFlags.pm, x86_64); anything else needs a custom model. */
export const VM_CPU_FLAGS = [
  'aes',
  'amd-no-ssb',
  'amd-ssbd',
  'hv-evmcs',
  'hv-tlbflush',
  'ibpb',
  'md-clear',
  'nested-virt',
  'pcid',
  'pdpe1gb',
  'spec-ctrl',
  'ssbd',
  'virt-ssbd',
] as const;

/**
 * Every model name qemu-server accepts in a VM config without asking QEMU: both architectures (it merges them),
 * its built-in models, and `host` (which exists on the host's architecture).
 */
export function knownCpuModels(): Set<string> {
  return new Set<string>([...QEMU_CPU_MODELS.x86_64, ...QEMU_CPU_MODELS.aarch64, ...PVE_BUILTIN_CPU_MODELS, 'host']);
}

export function isCustomCpuModel(cputype: string): boolean {
  return cputype.startsWith('custom-');
}

const FLAG_RE = new RegExp(`^[+-](?:${VM_CPU_FLAGS.join('|')})$`);

/**
 * The VM-specific rules of `validate_vm_cpu_conf`, on an already parsed cpu property string. `models` are the
 * names the node knows (defaults to {@link knownCpuModels}); `customModels` the custom ones when known (undefined:
 * any `custom-` name passes, as nothing can tell). Returns qemu-server's error text, or undefined when valid.
 */
export function vmCpuConfError(
  cpu: Readonly<Record<string, string | undefined>>,
  models: ReadonlySet<string> = knownCpuModels(),
  customModels?: ReadonlySet<string>,
): string | undefined {
  const cputype = cpu['cputype'];
  if (!cputype) return 'CPU is missing cputype';
  if (isCustomCpuModel(cputype)) {
    const name = cputype.slice('custom-'.length);
    if (customModels !== undefined && !customModels.has(cputype)) return `Custom cputype '${name}' not found`;
  } else if (!models.has(cputype)) {
    return `Built-in cputype '${cputype}' is not defined (missing 'custom-' prefix?)`;
  }
  const flags = cpu['flags'];
  if (flags !== undefined && flags !== '' && !flags.split(';').every((f) => FLAG_RE.test(f))) {
    return `VM-specific CPU flags must be a subset of: ${VM_CPU_FLAGS.join(', ')}`;
  }
  if (cpu['reported-model'] !== undefined) return "Property 'reported-model' not allowed in VM-specific CPU config.";
  return undefined;
}
