//! Flags bounding the workflow listing (`GET /v1/workflows`). Only parsing
//! lives here; the walk and its defaults are `engine::workflows::ScanLimits`.

use clap::Args;

use crate::engine::workflows::ScanLimits;

/// How much of the root dir one listing may look at (see docs/security.md,
/// "What the host reads, watches and quotes").
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// Deepest directory a listing of the workflows reads, in levels below
    /// the root dir.
    #[arg(long, global = true, default_value_t = 6)]
    pub max_scan_depth: usize,
    /// Most directory entries one listing of the workflows reads.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub max_scan_entries: usize,
    /// Most workflows one listing reports (each `.wasm` listed is loaded).
    #[arg(long, global = true, default_value_t = 200)]
    pub max_listed_workflows: usize,
}

impl ScanArgs {
    pub(super) fn limits(&self) -> ScanLimits {
        ScanLimits {
            max_depth: self.max_scan_depth,
            max_entries: self.max_scan_entries,
            max_workflows: self.max_listed_workflows,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_flag_defaults_are_the_engine_defaults() {
        #[derive(Parser)]
        struct Probe {
            #[command(flatten)]
            scan: ScanArgs,
        }
        let parsed = Probe::parse_from(["probe"]).scan.limits();
        assert_eq!(parsed, ScanLimits::default());
    }
}
