// Data-parallel training across processes: the torchrun environment, the rendezvous (a TCPStore),
// collectives on libtorch's c10d (Gloo on the CPU, NCCL on CUDA), and `--nproc-per-node`'s launcher.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace peft {

// What the launcher (torchrun, or `peft train --nproc-per-node`) tells each process.
struct WorldEnv {
  bool given = false;   // RANK or WORLD_SIZE is set: this process is one of a group
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // among the processes of this machine
  bool local_size_given = false;
  std::string master_addr;  // where the rendezvous store listens
  int master_port = 0;
  bool agent_store = false;  // TORCHELASTIC_USE_AGENT_STORE=True: the launcher hosts the store, every rank connects
  int restart = 0;           // TORCHELASTIC_RESTART_COUNT: an attempt's keys never meet an earlier attempt's
  int launcher_pid = 0;      // PEFT_LAUNCHER_PID: set by `peft train --nproc-per-node`
  bool all_local() const;    // every process is on this machine (a loopback store, or local_size == size)
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
// TORCHELASTIC_USE_AGENT_STORE and TORCHELASTIC_RESTART_COUNT through `get` (getenv by default).
// Throws std::invalid_argument naming the variable, its value and what it must be.
WorldEnv parse_world_env(const std::function<const char*(const char*)>& get = {});

// Intra-op threads for one of the processes: PEFT_NUM_THREADS when set (init_runtime reads it),
// else this machine's cores shared among its local processes (at least 1).
int threads_per_process(const WorldEnv& env);

// The processes of one run and what they do together. A default World is a single process: rank 0
// of 1, no communication, every collective a no-op, nothing of c10d created. Collectives must be
// called by every process in the same order; a failure (a process gone, the timeout) throws
// std::runtime_error naming the operation and, when it can tell, the process that is gone.
class World {
 public:
  World();
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // Joins the group `env` describes: the TCPStore at MASTER_ADDR:MASTER_PORT (hosted by rank 0,
  // or by the launcher with agent_store), then a process group over it: NCCL when `device` is
  // CUDA (and the build has it), Gloo otherwise. `timeout` bounds the rendezvous and every
  // collective. A group of one is a default World.
  static std::shared_ptr<World> connect(const WorldEnv& env, at::Device device, std::chrono::milliseconds timeout);

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  bool is_main() const { return rank_ == 0; }  // rank 0: the one that prints and writes the run's files
  bool distributed() const { return size_ > 1; }
  std::string name() const;  // "rank 1 of 2"

  // In place over every process. `what` names the operation in errors ("the gradients of step 12").
  void all_reduce_sum(at::Tensor& t, const std::string& what);
  void all_reduce_max(at::Tensor& t, const std::string& what);
  // Every process's `t` (same shape and dtype everywhere), in rank order.
  std::vector<at::Tensor> all_gather(const at::Tensor& t, const std::string& what);
  void barrier(const std::string& what);
  // Rank 0's `text` on every process (through the store); `key` must be new for each call.
  std::string text_of_main(const std::string& key, const std::string& text);
  // Throws on every process unless all of them pass the same `value` ("the processes disagree on WHAT").
  void check_same(uint64_t value, const std::string& what);
  // Runs `fn` here; throws on every process when it threw on any: its own error where it failed,
  // "rank R stopped while WHAT (its error is above)" elsewhere.
  void all_succeed(const std::function<void()>& fn, const std::string& what);

  // Seconds spent in collectives since the last call (for the benchmark).
  double take_collective_seconds();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// The rendezvous store of a launcher on this machine: a TCPStore server on a free port.
class StoreServer {
 public:
  explicit StoreServer(std::chrono::milliseconds timeout);
  ~StoreServer();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `peft train --nproc-per-node N`: runs `argv` (argv[0]: the program) as N processes of this machine,
// each with the torchrun environment (RANK = LOCAL_RANK = 0..N-1, WORLD_SIZE = LOCAL_WORLD_SIZE = N,
// MASTER_ADDR 127.0.0.1, the port of a StoreServer it hosts, TORCHELASTIC_USE_AGENT_STORE=True)
// plus `env`. SIGINT and SIGTERM are passed on to the processes. When one fails, it says which and
// how, waits up to `grace` for the others to stop by themselves, then kills them. Returns 0 when all
// succeed, else the exit code of the first that failed (128 + signal when it was killed).
struct LaunchOptions {
  int nprocs = 1;
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::chrono::milliseconds timeout{300000};
  std::chrono::seconds grace{30};
  std::function<void(const std::string&)> say;  // the launcher's own lines (default: stderr)
};
int launch_local(const LaunchOptions& options);

// The path of the running program (/proc/self/exe), to start copies of it.
std::string this_program();

}  // namespace peft
