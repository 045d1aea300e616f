// Page transfer for `dosql import` / `dosql export`. Not implemented yet.

import { type DbContext, jsonError } from "./http";

export async function handleTransfer(_request: Request, rest: string, _db: DbContext): Promise<Response> {
  return jsonError(404, "NOT_FOUND", `transfer route ${rest} is not implemented`);
}
