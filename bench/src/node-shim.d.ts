// The little of Node that src/inner.ts and src/inner-ab.ts use (the rest of src/ is typed for workerd).
declare module "node:fs" {
  export function readFileSync(path: string): Uint8Array;
  export function readFileSync(path: string, encoding: "utf8"): string;
  export function writeFileSync(path: string, data: string): void;
  export function mkdirSync(path: string, opts: { recursive: boolean }): void;
}
declare module "node:crypto" {
  export function createHash(alg: string): { update(s: string): { digest(enc: "hex"): string } };
}
declare module "node:path" {
  export function join(...parts: string[]): string;
}
declare const process: { argv: string[]; env: Record<string, string | undefined>; exit(code: number): never };
interface ImportMeta {
  url: string;
}
