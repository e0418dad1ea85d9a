/** @jsxImportSource smithers-orchestrator */
// examples/approval: `prepare` outputs a plan, the `gate` task needs an
// approval, then `apply` runs. Smithers parks at the gate; approving it does
// not continue the run: the client must also resume it.
import { createSmithers, Sequence, Task } from "smithers-orchestrator";
import { z } from "zod";

const { Workflow, smithers, outputs } = createSmithers(
  {
    input: z.object({ target: z.string().default("staging") }),
    plan: z.object({ plan: z.string(), steps: z.number() }),
    decision: z.object({ approved: z.boolean() }),
    applied: z.object({ applied: z.string() }),
  },
  { dbPath: `${process.env.PEER_DB_DIR ?? "."}/approval.db` },
);

export default smithers((ctx) => (
  <Workflow name="approval">
    <Sequence>
      <Task id="prepare" output={outputs.plan}>
        {() => ({ plan: `deploy ${ctx.input.target ?? "staging"}`, steps: 3 })}
      </Task>
      <Task id="gate" output={outputs.decision} needsApproval label="Apply the plan?">
        {{ approved: true }}
      </Task>
      <Task id="apply" output={outputs.applied}>
        {() => ({ applied: `deploy ${ctx.input.target ?? "staging"}` })}
      </Task>
    </Sequence>
  </Workflow>
));
