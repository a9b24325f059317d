// The strict multipart/form-data reader of PVE's upload endpoint: text fields first, then one file part named `filename`.
import { serverError } from './errors.js';

export interface UploadBody {
  /** Recognised text fields (`content`, `checksum-algorithm`, `checksum`). */
  fields: Record<string, string>;
  /** The `filename="..."` attribute of the file part. */
  filename: string;
  data: Buffer;
}

const textFields = ['content', 'checksum-algorithm', 'checksum'];

/**
 * Parses an upload body. Throws PVE-worded 500s for what PVE's parser refuses: a missing Content-Length,
 * a non-multipart content type, or a file part not named `filename`.
 */
export function parseUpload(headers: Readonly<Record<string, string | undefined>>, body: Buffer): UploadBody {
  const contentType = headers['content-type'] ?? '';
  if (headers['content-length'] === undefined) throw serverError('upload without content length header not supported');
  const m = /^multipart\/form-data;\s*boundary=("?)([^";]+)\1/i.exec(contentType);
  if (!m) throw serverError(`upload 'Content-Type '${contentType}' not implemented`);
  const boundary = Buffer.from(`--${m[2]}`);
  const fields: Record<string, string> = {};
  let pos = body.indexOf(boundary);
  if (pos < 0) throw serverError('unable to parse upload - missing boundary');
  for (;;) {
    pos += boundary.length;
    if (body.subarray(pos, pos + 2).toString() === '--') break;
    if (body.subarray(pos, pos + 2).toString() === '\r\n') pos += 2;
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    if (headerEnd < 0) throw serverError('unable to parse upload - incomplete part header');
    const headerText = body.subarray(pos, headerEnd).toString('latin1');
    const dataStart = headerEnd + 4;
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), boundary]), dataStart);
    if (next < 0) throw serverError('unable to parse upload - missing closing boundary');
    const data = body.subarray(dataStart, next);
    // The header name must be exactly "Content-Disposition".
    const disp = /^Content-Disposition: form-data; name="([^"]*)"(?:; filename="([^"]*)")?/m.exec(headerText);
    if (!disp) throw serverError('unable to parse upload - no Content-Disposition header');
    const name = disp[1]!;
    const file = disp[2];
    if (file !== undefined) {
      if (name !== 'filename') throw serverError(`wrong field name '${name}' for file upload, expected 'filename'`);
      return { fields, filename: file, data: Buffer.from(data) };
    }
    if (textFields.includes(name)) fields[name] = data.toString('utf8');
    pos = next + 2;
  }
  throw serverError("unable to parse upload - no file part named 'filename'");
}
