// The real Smithers server (smithers-orchestrator startServer), as the peer
// benchmark runs it: loopback only, no auth, no server db (so nothing is
// mirrored: the lightest configuration), workflows confined to ROOT_DIR.
//
// PORT=0 picks a free port; the chosen one is printed as
// "smithers listening on http://127.0.0.1:<port>" (the harness waits for it).
import { startServer } from "smithers-orchestrator";

const rootDir = process.env.ROOT_DIR;
if (!rootDir) throw new Error("ROOT_DIR is required");
const server = startServer({
  port: Number(process.env.PORT ?? 0),
  host: "127.0.0.1",
  rootDir,
});
server.on("listening", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : address;
  console.log(`smithers listening on http://127.0.0.1:${port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
