// The little of Node that src/inner.ts uses (the rest of src/ is typed for workerd).
declare module "node:fs" {
  export function readFileSync(path: string): Uint8Array;
  export function readFileSync(path: string, encoding: "utf8"): string;
}
declare module "node:path" {
  export function join(...parts: string[]): string;
}
declare const process: { argv: string[] };
