import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { ChatResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import { ListModelsRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { composeStream, composeUnary, everyUnary, type Interceptor, type StreamCall } from "../../../src/gateway/interceptor.js";
import { callOf, chatAnswer, chatRequest, drain, events, generateRequest } from "./helpers.js";

/** A step that notes, in `log`, each phase it sees. */
function noting(name: string, log: string[], over: Partial<Interceptor> = {}): Interceptor {
  return {
    name,
    unary: everyUnary((next) => async (call) => {
      log.push(`${name} before`);
      const res = await next(call);
      log.push(`${name} after`);
      return res;
    }),
    stream: (next) => (call) => {
      log.push(`${name} setup`);
      return next(call);
    },
    event: (_call, e) => {
      log.push(`${name} event ${e.event.case}`);
    },
    end: (_call, err) => {
      log.push(`${name} end ${err === undefined ? "ok" : String(err)}`);
      return err;
    },
    ...over,
  };
}

describe("composeUnary", () => {
  it("runs the steps outermost first around the handler, and leaves out a step without the RPC", async () => {
    const log: string[] = [];
    const chatOnly: Interceptor = {
      name: "chat only",
      unary: {
        Chat: (next) => (call) => {
          log.push("chat only");
          return next(call);
        },
      },
    };
    const steps = [noting("a", log), chatOnly, noting("b", log)];
    const chat = composeUnary(steps, "Chat", async () => {
      log.push("handler");
      return chatAnswer();
    });
    await chat(callOf("Chat", chatRequest()));
    expect(log).toEqual(["a before", "chat only", "b before", "handler", "b after", "a after", "b end ok", "a end ok"]);
    log.length = 0;
    const models = composeUnary(steps, "ListModels", async () => {
      log.push("handler");
      return {} as never;
    });
    await models(callOf("ListModels", create(ListModelsRequestSchema, {})));
    expect(log).toEqual(["a before", "b before", "handler", "b after", "a after", "b end ok", "a end ok"]);
  });

  it("the ends see the answer or the failure, innermost first, and may replace either; a step's throw at once is a rejection", async () => {
    const seen: unknown[] = [];
    const failing: Interceptor = {
      name: "fail on answer",
      unary: { Chat: (next) => next },
      end: (_c, err, answer) => (seen.push(["inner", err, answer === undefined ? "none" : "answer"]), err ?? new Error("encoding failed")),
    };
    const outer: Interceptor = { name: "outer", unary: { Chat: (next) => next }, end: (_c, err) => (seen.push(["outer", (err as Error).message]), err) };
    const chat = composeUnary([outer, failing], "Chat", async () => chatAnswer());
    await expect(chat(callOf("Chat", chatRequest()))).rejects.toThrow("encoding failed");
    expect(seen).toEqual([
      ["inner", undefined, "answer"],
      ["outer", "encoding failed"],
    ]);
    const throwing: Interceptor = {
      name: "throws",
      unary: {
        Chat: () => () => {
          throw new Error("at once");
        },
      },
      end: (_c, err) => err,
    };
    const refused = composeUnary([throwing], "Chat", async () => chatAnswer());
    let returned: Promise<unknown> | undefined;
    expect(() => (returned = refused(callOf("Chat", chatRequest())))).not.toThrow();
    await expect(returned).rejects.toThrow("at once");
  });

  it("composes once: the wrappers are made at composition, not per call", async () => {
    let made = 0;
    const step: Interceptor = {
      name: "counting",
      unary: {
        Chat: (next) => {
          made++;
          return next;
        },
      },
    };
    const chat = composeUnary([step], "Chat", async (): Promise<ChatResponse> => chatAnswer());
    for (let i = 0; i < 3; i++) await chat(callOf("Chat", chatRequest()));
    expect(made).toBe(1);
  });
});

describe("composeStream", () => {
  it("sets up outermost first; events and the end are told innermost first, in one loop", async () => {
    const log: string[] = [];
    const stream = composeStream([noting("outer", log), noting("inner", log)], () => events("x"));
    const { items, err } = await drain(stream(callOf("Generate", generateRequest())));
    expect(err).toBeUndefined();
    expect(items.map((e) => e.event.case)).toEqual(["textDelta", "final"]);
    expect(log).toEqual([
      "outer setup",
      "inner setup",
      "inner event textDelta",
      "outer event textDelta",
      "inner event final",
      "outer event final",
      "inner end ok",
      "outer end ok",
    ]);
  });

  it("counts the events it gives out on the call, before the steps see each", async () => {
    const seen: number[] = [];
    const stream = composeStream([{ name: "count", stream: (next) => next, event: (call) => void seen.push(call.events) }], () => events("a", "b"));
    await drain(stream(callOf("Generate", generateRequest())));
    expect(seen).toEqual([1, 2, 3]);
  });

  it("a step's end may replace the failure; the stream then fails with that", async () => {
    const log: string[] = [];
    const replacing: Interceptor = { name: "replace", stream: (next) => next, end: (_c, err) => (err === undefined ? undefined : new Error("replaced")) };
    const stream = composeStream([noting("outer", log), replacing], () => {
      throw new Error("setup failed");
    });
    const { err } = await drain(stream(callOf("Generate", generateRequest())));
    expect((err as Error).message).toBe("replaced");
    expect(log).toEqual(["outer setup", "outer end Error: replaced"]);
  });

  it("an event hook that throws fails the stream; one that returns a promise holds the event until it settles", async () => {
    const order: string[] = [];
    const holding: Interceptor = {
      name: "hold",
      stream: (next) => next,
      event: async (_c, e) => {
        await new Promise((r) => setTimeout(r, 5));
        order.push(`held ${e.event.case}`);
        if (e.event.case === "final") throw new Error("no final");
      },
    };
    const stream = composeStream([holding], () => events("a"));
    const it = stream(callOf("Generate", generateRequest()));
    const first = await it.next();
    order.push(`got ${(first.value as GenerateResponse).event.case}`);
    await expect(it.next()).rejects.toThrow("no final");
    expect(order).toEqual(["held textDelta", "got textDelta", "held final"]);
  });

  it("a consumer that stops reading ends the stream without a failure; one that throws in fails it", async () => {
    const ends: unknown[] = [];
    const step: Interceptor = { name: "end", stream: (next) => next, end: (_c, err) => (ends.push(err), err) };
    const stream = composeStream([step], () => events("a", "b"));
    const stopped = stream(callOf("Generate", generateRequest()));
    await stopped.next();
    await stopped.return();
    const thrownInto = stream(callOf("Generate", generateRequest()));
    await thrownInto.next();
    const tooLarge = new Error("too large");
    await expect(thrownInto.throw(tooLarge)).rejects.toBe(tooLarge);
    expect(ends).toEqual([undefined, tooLarge]);
  });

  it("takes events a step gives after waiting, or as an array", async () => {
    const waiting: Interceptor = { name: "wait", stream: (next) => async (call: StreamCall) => next(call) };
    const stream = composeStream([waiting], () => events("a"));
    expect((await drain(stream(callOf("Generate", generateRequest())))).items).toHaveLength(2);
  });
});
