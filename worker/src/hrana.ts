// libSQL's Hrana over HTTP (v2/v3 pipelines) for @libsql/client. Not implemented yet.

import { type DbContext, jsonError } from "./http";

export async function handleHrana(_request: Request, rest: string, _db: DbContext): Promise<Response> {
  return jsonError(404, "NOT_FOUND", `Hrana route ${rest} is not implemented`);
}
