// Conversions between COSI wire messages (protobuf-es) and the in-process Omni's store types, with the Go
// server's checks on incoming metadata (version text, phase text, missing metadata/spec).
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  LabelTerm_Operation,
  MetadataSchema,
  ResourceSchema,
  type LabelQuery as WireLabelQuery,
  type Resource as WireResource,
} from '../../gen/cosi/v1alpha1/resource_pb.js';
import { EventSchema, EventType, type Event as WireEvent } from '../../gen/cosi/v1alpha1/state_pb.js';
import { OmniError } from './errors.js';
import { formatVersion, parsePhase, parseVersion, type LabelOp, type LabelQuery, type Resource, type ResourceInput, type StoreEvent } from './store.js';

/** Go's zero time.Time as a protobuf Timestamp (what a tombstone carries). */
const GO_ZERO_TIME = new Date(Date.UTC(1, 0, 1));

export function resourceToWire(res: Resource): WireResource {
  const md = res.metadata;
  return create(ResourceSchema, {
    metadata: create(MetadataSchema, {
      namespace: md.namespace,
      type: md.type,
      id: md.id,
      version: formatVersion(md.version),
      owner: md.owner,
      phase: md.phase,
      created: timestampFromDate(md.created),
      updated: timestampFromDate(md.updated),
      finalizers: [...md.finalizers],
      labels: { ...md.labels },
      annotations: { ...md.annotations },
    }),
    spec: { protoSpec: res.spec.protoSpec, yamlSpec: res.spec.yamlSpec },
  });
}

/** Incoming resource → store input; rejects what the Go server's unmarshaling rejects (status UNKNOWN there). */
export function resourceFromWire(wire: WireResource | undefined): ResourceInput {
  if (!wire?.metadata) throw new OmniError('malformed', 'metadata is missing');
  if (!wire.spec) throw new OmniError('malformed', 'spec is missing');
  const md = wire.metadata;
  const version = parseVersion(md.version);
  const phase = parsePhase(md.phase);
  return {
    metadata: {
      namespace: md.namespace,
      type: md.type,
      id: md.id,
      version,
      owner: md.owner,
      phase,
      created: md.created ? timestampDate(md.created) : new Date(0),
      updated: md.updated ? timestampDate(md.updated) : new Date(0),
      finalizers: [...md.finalizers],
      labels: { ...md.labels },
      annotations: { ...md.annotations },
    },
    spec: { protoSpec: wire.spec.protoSpec, yamlSpec: wire.spec.yamlSpec },
  };
}

const ops: Record<number, LabelOp> = {
  [LabelTerm_Operation.EXISTS]: 'exists',
  [LabelTerm_Operation.EQUAL]: 'equal',
  [LabelTerm_Operation.NOT_EXISTS]: 'notExists',
  [LabelTerm_Operation.IN]: 'in',
  [LabelTerm_Operation.LT]: 'lt',
  [LabelTerm_Operation.LTE]: 'lte',
  [LabelTerm_Operation.LT_NUMERIC]: 'ltNumeric',
  [LabelTerm_Operation.LTE_NUMERIC]: 'lteNumeric',
};

export function labelQueriesFromWire(queries: readonly WireLabelQuery[]): LabelQuery[] {
  return queries.map((q) => ({
    terms: q.terms.map((t) => {
      const op = ops[t.op];
      if (op === undefined) throw new OmniError('unimplemented', `unsupported label query operator: ${t.op}`);
      if (op !== 'exists' && op !== 'notExists' && op !== 'in' && t.value.length === 0) {
        // The Go server indexes value[0]; the panic surfaces as INTERNAL.
        throw new OmniError('internal', `label term ${JSON.stringify(t.key)} has no value`);
      }
      return { key: t.key, op, values: [...t.value], invert: t.invert };
    }),
  }));
}

const eventTypes: Record<StoreEvent['type'], EventType> = {
  created: EventType.CREATED,
  updated: EventType.UPDATED,
  destroyed: EventType.DESTROYED,
  bootstrapped: EventType.BOOTSTRAPPED,
  errored: EventType.ERRORED,
  noop: EventType.NOOP,
};

/** Store event → wire event; undefined when an old client (api_version 0) must not see it. */
export function eventToWire(event: StoreEvent, apiVersion: number): WireEvent | undefined {
  if (apiVersion < 1 && (event.type === 'bootstrapped' || event.type === 'errored')) return undefined;
  const init: MessageInitShape<typeof EventSchema> = { eventType: eventTypes[event.type] };
  if (event.resource) {
    const isTombstone = event.resource.metadata.version === undefined;
    const wire = resourceToWire(event.resource);
    if (isTombstone && wire.metadata) {
      wire.metadata.created = timestampFromDate(GO_ZERO_TIME);
      wire.metadata.updated = timestampFromDate(GO_ZERO_TIME);
    }
    init.resource = wire;
  }
  if (event.old) init.old = resourceToWire(event.old);
  if (event.error !== undefined) init.error = event.error;
  if (event.bookmark !== undefined) init.bookmark = event.bookmark;
  return create(EventSchema, init);
}
