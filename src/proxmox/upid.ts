// Proxmox task identifiers (UPIDs): parsing and recognising `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`.

export interface Upid {
  /** The node that runs the task and holds its log; task calls must go to this node. */
  node: string;
  pid: number;
  pstart: number;
  /** Unix seconds. */
  starttime: number;
  type: string;
  /** Task object id (vmid, storage, filename); may be empty (e.g. `imgcopy`). */
  id: string;
  /** `user@realm`, without the token part. */
  user: string;
  /** Token name when the task was started with an API token (`user@realm!tokenid`). */
  tokenid?: string;
}

const UPID_RE =
  /^UPID:([a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$/;

/** Parses a UPID; throws a TypeError on anything that is not one. */
export function parseUpid(s: string): Upid {
  const m = UPID_RE.exec(s);
  if (!m) {
    throw new TypeError(`not a Proxmox task id (UPID): ${JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s)}`);
  }
  const [, node, pid, pstart, starttime, type, id, fullUser] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const bang = fullUser.indexOf('!');
  const upid: Upid = {
    node,
    pid: parseInt(pid, 16),
    pstart: parseInt(pstart, 16),
    starttime: parseInt(starttime, 16),
    type,
    id,
    user: bang >= 0 ? fullUser.slice(0, bang) : fullUser,
  };
  if (bang >= 0) upid.tokenid = fullUser.slice(bang + 1);
  return upid;
}

export function isUpid(s: unknown): s is string {
  return typeof s === 'string' && UPID_RE.test(s);
}
