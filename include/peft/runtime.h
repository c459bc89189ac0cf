// Process-wide runtime settings: the CPU thread count (libtorch may start with one thread).
// Call init_runtime() once before any tensor work; PEFT_NUM_THREADS overrides the core count.
#pragma once

namespace peft {

// Sets libtorch's intra-op thread count to PEFT_NUM_THREADS, or else to the number of cores.
// Returns the count in effect. Safe to call more than once.
int init_runtime();

}  // namespace peft
