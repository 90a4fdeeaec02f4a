/**
 * JSON values as google.protobuf.Struct fields in the form @grpc/proto-loader takes them
 * (protobufjs bundles struct.proto with camelCase field names, whatever keepCase says): for
 * requests that carry a JSON Schema (tool parameters, response formats) over a grpc-js client.
 */
type Obj = Record<string, unknown>;

/** A JSON value as a google.protobuf.Value. */
export function protoValue(v: unknown): Obj {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(protoValue) } };
  return { structValue: protoStruct(v as Obj) };
}

/** A JSON object as a google.protobuf.Struct. */
export function protoStruct(o: Obj): Obj {
  return { fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, protoValue(v)])) };
}
