// Process-wide runtime settings: the CPU thread count (libtorch may start with one thread), and a
// check for other processes on the cores, which make OpenMP's spinning threads many times slower.
#pragma once

#include <string>

namespace peft {

// Sets libtorch's intra-op thread count to PEFT_NUM_THREADS, or else to the number of cores, and
// (glibc) has malloc reuse large blocks instead of mapping them afresh each time (unless GLIBC_TUNABLES
// sets malloc options).
// Returns the count in effect. Safe to call more than once. Throws std::invalid_argument when
// PEFT_NUM_THREADS is set but is not a whole number >= 1, or PEFT_GEMM is not a backend (peft/core/gemm.h).
int init_runtime();

// How many cores' worth of CPU time the machine spent busy during the next `seconds` while this
// process sleeps (from /proc/stat), i.e. what other processes use; a negative value when unknown.
double busy_cores(double seconds = 0.25);

// With several threads, a note for the user when other processes keep the cores busy: OpenMP's
// threads spin-wait for each other, so a step can take several times longer than on one thread.
// Empty when `threads` is 1 or the cores are free. Takes `seconds` to measure.
std::string shared_cores_note(int threads, double seconds = 0.25);

// The value of the first "key : value" line of /proc/cpuinfo with this key ("vendor_id", "flags"), or
// empty when there is none (or no /proc/cpuinfo).
std::string cpuinfo_field(const std::string& key);

// Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo); without
// it libtorch's bf16 matmul takes a slow path, often 50-200x slower than float32.
bool cpu_has_native_bf16();

// For a bfloat16 base on the CPU: empty when the CPU has native bf16; else a note that says so, how
// much slower a bf16 matmul measured here is than a float32 one (a probe of about 0.1 s), and that
// float32 is the faster choice.
std::string bf16_cpu_note();

}  // namespace peft
