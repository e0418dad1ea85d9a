//! Per-instance resource limits that remember which limit a guest hit, so a
//! trap caused by a refused `memory.grow` is reported as a memory-limit error
//! rather than an opaque `unreachable`.

use wasmtime::ResourceLimiter;

/// Most tables and table elements a workflow instance may create.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

pub(super) struct GuestLimiter {
    max_memory_bytes: u64,
    hit_memory_limit: bool,
}

impl GuestLimiter {
    pub(super) fn new(max_memory_bytes: u64) -> Self {
        Self {
            max_memory_bytes,
            hit_memory_limit: false,
        }
    }

    pub(super) fn hit_memory_limit(&self) -> bool {
        self.hit_memory_limit
    }

    pub(super) fn max_memory_bytes(&self) -> u64 {
        self.max_memory_bytes
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired as u64 <= self.max_memory_bytes;
        if !allowed {
            self.hit_memory_limit = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
