/** @jsxImportSource smithers-orchestrator */
// examples/fibo: `n` sequential tasks fibo-0 .. fibo-<n-1>, each computing
// fibo(10) iteratively and outputting {i, fibo: 55}. The work per task is
// negligible, so a run measures the orchestrator.
import { createSmithers, Sequence, Task } from "smithers-orchestrator";
import { z } from "zod";

const { Workflow, smithers, outputs } = createSmithers(
  {
    input: z.object({ n: z.number().int().default(10) }),
    step: z.object({ i: z.number(), fibo: z.number() }),
  },
  { dbPath: `${process.env.PEER_DB_DIR ?? "."}/fibo.db` },
);

function fibo(n: number): number {
  let a = 0;
  let b = 1;
  for (let k = 0; k < n; k++) [a, b] = [b, a + b];
  return a;
}

export default smithers((ctx) => (
  <Workflow name="fibo">
    <Sequence>
      {Array.from({ length: ctx.input.n ?? 10 }, (_, i) => (
        <Task key={i} id={`fibo-${i}`} output={outputs.step}>
          {() => ({ i, fibo: fibo(10) })}
        </Task>
      ))}
    </Sequence>
  </Workflow>
));
