// Drives a smithers-host gateway with the published Smithers gateway client
// (the `gateway-client` export of smithers-orchestrator@0.32.0, which is a
// re-export of @smithers-orchestrator/gateway-client@0.32.0), unchanged.
//
// Usage: GATEWAY_URL=http://127.0.0.1:7331 [GATEWAY_TOKEN=...] [WORKFLOW=approval] bun run client.ts
//
// It launches a run of WORKFLOW (the `example-approval` component), streams
// its events over the WebSocket with streamRunEventsResilient, approves the
// gate when `approval.requested` arrives, checks that a second decision is
// refused with AlreadyDecided (409), and prints one line `RESULT <json>`.
import { GatewayRpcError, SmithersGatewayClient } from "@smithers-orchestrator/gateway-client";

const baseUrl = process.env.GATEWAY_URL ?? "http://127.0.0.1:7331";
const token = process.env.GATEWAY_TOKEN || undefined;
const workflow = process.env.WORKFLOW ?? "approval";

function fail(message: string): never {
  console.error(`client.ts: ${message}`);
  process.exit(1);
}

const client = new SmithersGatewayClient({
  baseUrl,
  token,
  client: { id: "smithers-host-gateway-test", version: "0.32.0", platform: "bun" },
});

const health = (await client.rpc("health" as never, {} as never)) as Record<string, unknown>;
const workflows = await client.listWorkflows();
if (!workflows.some((w) => w.key === workflow)) fail(`workflow ${workflow} is not registered`);

const launched = await client.launchRun({ workflow, input: { target: "client-test" } });
const runId = launched.runId;

const timeout = setTimeout(() => fail("timed out waiting for run.completed"), 60_000);
const events: Array<{ seq: number; event: string }> = [];
let approved: unknown = null;
let approvalsListed = 0;
let completed: Record<string, unknown> | null = null;
for await (const frame of client.streamRunEventsResilient({ runId, afterSeq: 0 })) {
  if (frame.event !== "run.event") continue;
  const payload = frame.payload as { seq: number; event: string; payload: Record<string, unknown> };
  events.push({ seq: payload.seq, event: payload.event });
  if (payload.event === "approval.requested") {
    const nodeId = String(payload.payload.nodeId);
    const pending = await client.listApprovals({ filter: { runId } });
    approvalsListed = pending.length;
    approved = await client.submitApproval({
      runId,
      nodeId,
      iteration: 0,
      decision: { approved: true, note: "approved by the published client" },
    } as never);
  }
  if (payload.event === "run.completed") {
    completed = payload.payload;
    break;
  }
}
clearTimeout(timeout);

let secondDecision: { code: string; status?: number } | null = null;
try {
  await client.submitApproval({ runId, nodeId: "gate", iteration: 0, decision: { approved: false } } as never);
} catch (error) {
  if (!(error instanceof GatewayRpcError)) throw error;
  secondDecision = { code: error.code, status: error.status };
}
const run = (await client.getRun({ runId })) as Record<string, unknown>;
client.close();

const seqs = events.map((e) => e.seq);
const gapless = seqs.every((seq, i) => seq === i + 1);
console.log(
  "RESULT " +
    JSON.stringify({
      protocol: health.protocol,
      runId,
      events: events.length,
      gapless,
      names: [...new Set(events.map((e) => e.event))],
      approvalsListed,
      approved,
      completed,
      secondDecision,
      status: run.status,
    }),
);
