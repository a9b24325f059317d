import { describe, expect, it } from 'vitest';
import { PlacementError } from '../../src/provision/errors.js';
import { formatBytes, InFlightLedger, pickNode, type NodeSnapshot, type PlacementInput } from '../../src/provision/pickNode.js';

const GiB = 1024 ** 3;

function node(name: string, over: Partial<NodeSnapshot> = {}): NodeSnapshot {
  return { name, status: 'online', maxmem: 64 * GiB, committedMemory: 0, setVmCount: 0, ...over };
}

const req = { requestId: 'r-new', memoryBytes: 8 * GiB, setId: 'set-a' };

function fails(input: PlacementInput): PlacementError {
  try {
    pickNode(input);
  } catch (err) {
    expect(err).toBeInstanceOf(PlacementError);
    return err as PlacementError;
  }
  throw new Error('expected a PlacementError');
}

describe('pickNode: spread (default)', () => {
  it.each([
    ['fewest same-set VMs wins over more free memory', [node('pve1', { setVmCount: 1 }), node('pve2', { setVmCount: 0, committedMemory: 40 * GiB })], 'pve2'],
    ['tie on set count → most uncommitted memory', [node('pve1', { committedMemory: 30 * GiB }), node('pve2', { committedMemory: 10 * GiB })], 'pve2'],
    ['uncommitted memory counts, not size alone', [node('pve1', { maxmem: 128 * GiB, committedMemory: 120 * GiB }), node('pve2', { maxmem: 32 * GiB })], 'pve2'],
    ['full tie → name order (deterministic)', [node('pve3'), node('pve1'), node('pve2')], 'pve1'],
    ['offline nodes are skipped', [node('pve1', { status: 'offline' }), node('pve2', { committedMemory: 50 * GiB })], 'pve2'],
    ['unknown status is skipped', [node('pve1', { status: 'unknown' }), node('pve2', { setVmCount: 3 })], 'pve2'],
  ])('%s', (_name, nodes, expected) => {
    expect(pickNode({ nodes, request: req }).node).toBe(expected);
  });

  it('in-flight creates of the same set count like existing VMs (parallel requests spread)', () => {
    const nodes = [node('pve1'), node('pve2'), node('pve3')];
    const ledger = new InFlightLedger();
    const picks: string[] = [];
    for (const id of ['r1', 'r2', 'r3', 'r4']) {
      const { node: n } = pickNode({ nodes, inFlight: ledger.entries(), request: { ...req, requestId: id } });
      ledger.reserve(id, 'set-a', n, req.memoryBytes);
      picks.push(n);
    }
    expect(picks.slice(0, 3).sort()).toEqual(['pve1', 'pve2', 'pve3']);
    expect(new Set(picks).size).toBe(3);
  });

  it('in-flight entries of other sets do not count for spreading, but do use memory', () => {
    const nodes = [node('pve1', { maxmem: 20 * GiB }), node('pve2', { maxmem: 20 * GiB, committedMemory: 2 * GiB })];
    const inFlight = [{ requestId: 'other', setId: 'set-b', node: 'pve1', memBytes: 16 * GiB }];
    const p = pickNode({ nodes, inFlight, request: req });
    expect(p.node).toBe('pve2');
    expect(p.candidates).toContainEqual({ node: 'pve1', accepted: false, reason: 'needs 8 GiB, 4 GiB uncommitted' });
  });

  it('a ledger entry whose VM already exists on the node is not counted twice', () => {
    const nodes = [node('pve1', { setVmCount: 1, vmNames: ['r-old'], committedMemory: 8 * GiB }), node('pve2', { setVmCount: 1 })];
    const inFlight = [{ requestId: 'r-old', setId: 'set-a', node: 'pve1', memBytes: 8 * GiB }];
    // Without de-duplication pve1 would count 2 set VMs and lose; with it both have 1 and pve2 has more memory.
    expect(pickNode({ nodes, inFlight, request: req }).node).toBe('pve2');
    const nodes2 = [node('pve1', { setVmCount: 1, vmNames: ['r-old'] }), node('pve2', { setVmCount: 1, committedMemory: 1 * GiB })];
    expect(pickNode({ nodes: nodes2, inFlight, request: req }).node).toBe('pve1');
  });

  it('the request\'s own ledger entry is ignored on a retry', () => {
    const nodes = [node('pve1'), node('pve2', { committedMemory: 1 * GiB })];
    const inFlight = [{ requestId: 'r-new', setId: 'set-a', node: 'pve1', memBytes: 8 * GiB }];
    expect(pickNode({ nodes, inFlight, request: req }).node).toBe('pve1');
  });

  it('without a set, set counts are ignored', () => {
    const nodes = [node('pve1', { setVmCount: 5 }), node('pve2', { committedMemory: 1 * GiB })];
    expect(pickNode({ nodes, request: { requestId: 'x', memoryBytes: GiB } }).node).toBe('pve1');
  });
});

describe('pickNode: other strategies', () => {
  const nodes = [
    node('pve1', { committedMemory: 40 * GiB, vmCount: 2, setVmCount: 1 }),
    node('pve2', { committedMemory: 10 * GiB, vmCount: 9, setVmCount: 0 }),
    node('pve3', { committedMemory: 50 * GiB, vmCount: 1, setVmCount: 0 }),
    node('pve4', { committedMemory: 60 * GiB, vmCount: 0, setVmCount: 0 }),
  ];
  it.each([
    ['spread', 'pve2'],
    ['fewer-vms', 'pve3'],
    ['round-robin', 'pve2'],
    ['binpack', 'pve3'],
  ] as const)('%s', (strategy, expected) => {
    // pve4 has only 4 GiB uncommitted and cannot take 8 GiB, so every strategy must skip it.
    expect(pickNode({ nodes, request: { ...req, strategy } }).node).toBe(expected);
  });

  it('fewer-vms counts in-flight creates', () => {
    const few = [node('a', { vmCount: 1 }), node('b', { vmCount: 2 })];
    const inFlight = [
      { requestId: 'q1', setId: 'set-a', node: 'a', memBytes: GiB },
      { requestId: 'q2', setId: 'set-a', node: 'a', memBytes: GiB },
    ];
    expect(pickNode({ nodes: few, inFlight, request: { ...req, strategy: 'fewer-vms' } }).node).toBe('b');
  });

  it('binpack fills the fullest node that still fits', () => {
    const packs = [node('a', { committedMemory: 50 * GiB }), node('b', { committedMemory: 55 * GiB }), node('c', { committedMemory: 57 * GiB })];
    expect(pickNode({ nodes: packs, request: { ...req, strategy: 'binpack' } }).node).toBe('b');
  });
});

describe('pickNode: constraints', () => {
  it('pinned node is used when online even if another is better', () => {
    const p = pickNode({ nodes: [node('pve1'), node('pve2', { setVmCount: 4 })], request: { ...req, node: 'pve2' } });
    expect(p.node).toBe('pve2');
    expect(p.candidates).toContainEqual({ node: 'pve1', accepted: false, reason: 'not the pinned node pve2' });
  });

  it('pinned node that is offline fails with its reason', () => {
    const err = fails({ nodes: [node('pve1'), node('pve2', { status: 'offline' })], request: { ...req, node: 'pve2' } });
    expect(err.message).toBe('pinned node pve2 cannot take this VM: offline');
  });

  it('pinned node that does not exist fails listing the cluster', () => {
    const err = fails({ nodes: [node('pve1'), node('pve2')], request: { ...req, node: 'pve9' } });
    expect(err.message).toBe('pinned node "pve9" is not in the cluster (nodes: pve1, pve2)');
  });

  it('allowed_nodes restricts the choice', () => {
    const p = pickNode({ nodes: [node('pve1'), node('pve2', { committedMemory: 30 * GiB })], request: { ...req, allowedNodes: ['pve2'] } });
    expect(p.node).toBe('pve2');
    expect(p.candidates).toContainEqual({ node: 'pve1', accepted: false, reason: 'not in allowed_nodes' });
  });

  it('USB mappings: only nodes with an entry for every requested mapping (also with PCI mappings)', () => {
    const nodes = [
      node('pve1', { usbMappings: ['sdr'], pciMappings: ['gpu'] }),
      node('pve2', { usbMappings: ['sdr', 'zigbee'], pciMappings: [], committedMemory: 30 * GiB }),
      node('pve3', { usbMappings: ['sdr', 'zigbee'], pciMappings: ['gpu'], committedMemory: 40 * GiB }),
    ];
    const p = pickNode({ nodes, request: { ...req, usbMappings: ['sdr', 'zigbee'], pciMappings: ['gpu'] } });
    expect(p.node).toBe('pve3');
    expect(p.candidates).toContainEqual({ node: 'pve1', accepted: false, reason: 'no USB mapping zigbee on this node' });
    expect(p.candidates).toContainEqual({ node: 'pve2', accepted: false, reason: 'no PCI mapping gpu on this node' });
  });

  it('PCI mappings: only nodes that have every requested mapping', () => {
    const nodes = [node('pve1', { pciMappings: ['gpu'] }), node('pve2', { pciMappings: ['gpu', 'nic'], committedMemory: 30 * GiB }), node('pve3')];
    const p = pickNode({ nodes, request: { ...req, pciMappings: ['gpu', 'nic'] } });
    expect(p.node).toBe('pve2');
    expect(p.candidates).toContainEqual({ node: 'pve1', accepted: false, reason: 'no PCI mapping nic on this node' });
    expect(p.candidates).toContainEqual({ node: 'pve3', accepted: false, reason: 'no PCI mapping gpu, nic on this node' });
  });

  it('memory is committed VM memory, not host usage', () => {
    // Host reports little usage but VMs already commit 60 of 64 GiB.
    const err = fails({ nodes: [node('pve1', { committedMemory: 60 * GiB })], request: req });
    expect(err.message).toBe('no Proxmox node can take this VM: pve1: needs 8 GiB, 4 GiB uncommitted');
  });

  it('a node without memory stats (no Sys.Audit) is accepted but ranked after known capacity', () => {
    const p = pickNode({ nodes: [node('a', { maxmem: undefined }), node('b', { committedMemory: 50 * GiB })], request: req });
    expect(p.node).toBe('b');
    expect(p.candidates).toContainEqual({ node: 'a', accepted: true, reason: 'memory not reported (needs Sys.Audit), capacity not checked, 0 VM(s) of this set' });
    expect(pickNode({ nodes: [node('a', { maxmem: undefined })], request: req }).node).toBe('a');
  });

  it('nothing fits: the error lists every node with its reason', () => {
    const err = fails({
      nodes: [
        node('pve3', { maxmem: 16 * GiB, committedMemory: 14 * GiB }),
        node('pve2', { status: 'offline' }),
        node('pve1', { pciMappings: [] }),
        node('pve4'),
      ],
      request: { ...req, pciMappings: ['gpu'], allowedNodes: ['pve1', 'pve2', 'pve3', 'pve5'] },
    });
    expect(err.message).toBe(
      'no Proxmox node can take this VM: pve1: no PCI mapping gpu on this node; pve2: offline; ' +
        'pve3: no PCI mapping gpu on this node; pve4: not in allowed_nodes; pve5: not in cluster',
    );
    expect(err.candidates.every((c) => !c.accepted)).toBe(true);
  });

  it('memory reason text matches the operator example', () => {
    const err = fails({ nodes: [node('pve2', { status: 'offline' }), node('pve3', { maxmem: 16 * GiB, committedMemory: 14 * GiB })], request: req });
    expect(err.message).toBe('no Proxmox node can take this VM: pve2: offline; pve3: needs 8 GiB, 2 GiB uncommitted');
  });

  it('an empty cluster fails clearly', () => {
    expect(fails({ nodes: [], request: req }).message).toBe('no Proxmox node can take this VM: the cluster reports no nodes');
  });

  it('accepted candidates explain what placement saw', () => {
    const p = pickNode({ nodes: [node('pve1', { setVmCount: 2, committedMemory: 16 * GiB })], request: req });
    expect(p.candidates).toEqual([{ node: 'pve1', accepted: true, reason: '48 GiB uncommitted, 2 VM(s) of this set' }]);
  });
});

describe('InFlightLedger', () => {
  it('reserve / release / entries', () => {
    const l = new InFlightLedger();
    l.reserve('a', 's', 'pve1', GiB);
    l.reserve('b', undefined, 'pve2', 2 * GiB);
    l.reserve('a', 's', 'pve3', GiB); // a retry moves the reservation
    expect(l.entries()).toEqual([
      { requestId: 'a', setId: 's', node: 'pve3', memBytes: GiB },
      { requestId: 'b', setId: undefined, node: 'pve2', memBytes: 2 * GiB },
    ]);
    expect(l.release('a')).toBe(true);
    expect(l.release('a')).toBe(false);
    expect(l.entries().map((e) => e.requestId)).toEqual(['b']);
  });

  it('entries are copies', () => {
    const l = new InFlightLedger();
    l.reserve('a', 's', 'pve1', GiB);
    const [e] = l.entries();
    if (e) e.node = 'hacked';
    expect(l.entries()[0]?.node).toBe('pve1');
  });
});

describe('formatBytes', () => {
  it.each([
    [8 * GiB, '8 GiB'],
    [1.5 * GiB, '1.5 GiB'],
    [512 * 1024 ** 2, '512 MiB'],
    [0, '0 MiB'],
  ])('%d → %s', (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });
});
