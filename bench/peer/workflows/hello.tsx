/** @jsxImportSource smithers-orchestrator */
// examples/hello: one task greeting `input.name` (default "world").
import { createSmithers, Sequence, Task } from "smithers-orchestrator";
import { z } from "zod";

const { Workflow, smithers, outputs } = createSmithers(
  {
    input: z.object({ name: z.string().default("world") }),
    greeting: z.object({ greeting: z.string() }),
  },
  { dbPath: `${process.env.PEER_DB_DIR ?? "."}/hello.db` },
);

export default smithers((ctx) => (
  <Workflow name="hello">
    <Sequence>
      <Task id="greet" output={outputs.greeting}>
        {() => ({ greeting: `Hello, ${ctx.input.name ?? "world"}!` })}
      </Task>
    </Sequence>
  </Workflow>
));
