// The processes of a data-parallel run on libtorch's c10d: torchrun's environment, the TCPStore
// rendezvous, Gloo (CPU) or NCCL (CUDA) collectives with errors that name a vanished process, and
// the launcher of `peft train --nproc-per-node`. The only file that includes c10d.
#include "peft/train/distributed.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if PEFT_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if PEFT_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "peft/core/flags.h"
#include "peft/core/strings.h"

extern char** environ;

namespace peft {

namespace {

std::optional<std::string> env_value(const std::function<const char*(const char*)>& get, const char* name) {
  const char* v = get(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, const std::string& v, int64_t lo, int64_t hi, const std::string& meaning) {
  int64_t x = 0;
  bool ok = true;
  try {
    x = Flags::to_int64(v);
  } catch (const std::invalid_argument&) {
    ok = false;
  }
  if (!ok || x < lo || x > hi)
    throw std::invalid_argument(std::string(name) + "=\"" + v + "\": expected " + meaning);
  return static_cast<int>(x);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || starts_with(host, "127.") || host == "::1";
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

std::string first_line(const std::string& s) {
  auto end = s.find('\n');
  std::string line = s.substr(0, end);
  return line.empty() ? s : line;
}

// A process that has exited (or is a zombie nobody has reaped yet) is gone.
bool process_alive(int pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;  // no /proc: trust kill()
  auto close = line.rfind(')');
  return !(close != std::string::npos && close + 2 < line.size() && (line[close + 2] == 'Z' || line[close + 2] == 'X'));
}

std::string rendezvous_failure(const WorldEnv& env, const std::string& who, const std::string& where, const std::string& error) {
  std::string hint;
  if (env.agent_store) hint = "the launcher's store did not answer (is the launcher still running?)";
  else if (env.rank == 0) hint = "rank 0 hosts the store there: is the port free, and did every other process reach it?";
  else hint = "is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?";
  return "rendezvous at MASTER_ADDR:MASTER_PORT = " + where + " failed for " + who + ": " + first_line(error) + "; " + hint;
}

}  // namespace

bool WorldEnv::all_local() const { return local_size_given ? local_size == size : is_loopback(master_addr); }

WorldEnv parse_world_env(const std::function<const char*(const char*)>& get_in) {
  std::function<const char*(const char*)> get = get_in ? get_in : [](const char* n) -> const char* { return std::getenv(n); };
  WorldEnv e;
  auto rank = env_value(get, "RANK"), size = env_value(get, "WORLD_SIZE");
  if (!rank && !size) return e;  // one process on its own
  if (!size)
    throw std::invalid_argument("RANK=\"" + *rank + "\" is set but WORLD_SIZE is not: set both (torchrun does), or neither for one process");
  if (!rank)
    throw std::invalid_argument("WORLD_SIZE=\"" + *size + "\" is set but RANK is not: set both (torchrun does), or neither for one process");
  e.given = true;
  e.size = env_int("WORLD_SIZE", *size, 1, 1 << 20, "the number of processes, a whole number >= 1");
  e.rank = env_int("RANK", *rank, 0, e.size - 1, "a whole number from 0 to WORLD_SIZE - 1 = " + std::to_string(e.size - 1));
  if (e.size > 1) {
    auto addr = env_value(get, "MASTER_ADDR"), port = env_value(get, "MASTER_PORT");
    if (!addr)
      throw std::invalid_argument("WORLD_SIZE=" + *size + " but MASTER_ADDR is not set: set it to the address of rank 0's "
                                  "machine (torchrun sets it; 127.0.0.1 on one machine)");
    if (!port)
      throw std::invalid_argument("WORLD_SIZE=" + *size + " but MASTER_PORT is not set: set it to a free TCP port on " + *addr +
                                  " (torchrun sets it), the same for every process");
    e.master_addr = *addr;
    e.master_port = env_int("MASTER_PORT", *port, 1, 65535, "a TCP port from 1 to 65535");
  }
  auto local_size = env_value(get, "LOCAL_WORLD_SIZE"), local_rank = env_value(get, "LOCAL_RANK");
  if (local_size) {
    e.local_size_given = true;
    e.local_size = env_int("LOCAL_WORLD_SIZE", *local_size, 1, e.size, "the processes on this machine, from 1 to WORLD_SIZE = " + std::to_string(e.size));
  } else {
    e.local_size = e.all_local() ? e.size : 1;
  }
  if (local_rank)
    e.local_rank = env_int("LOCAL_RANK", *local_rank, 0, e.local_size - 1,
                           "a whole number from 0 to LOCAL_WORLD_SIZE - 1 = " + std::to_string(e.local_size - 1));
  else
    e.local_rank = e.rank % e.local_size;
  if (auto agent = env_value(get, "TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = *agent == "True" || *agent == "true" || *agent == "1";
  if (auto restart = env_value(get, "TORCHELASTIC_RESTART_COUNT"))
    e.restart = env_int("TORCHELASTIC_RESTART_COUNT", *restart, 0, INT_MAX, "a whole number >= 0");
  if (auto launcher = env_value(get, "PEFT_LAUNCHER_PID"))
    e.launcher_pid = env_int("PEFT_LAUNCHER_PID", *launcher, 1, INT_MAX, "a process id");
  return e;
}

int threads_per_process(const WorldEnv& env) {
  if (std::getenv("PEFT_NUM_THREADS")) return at::get_num_threads();  // init_runtime has read it
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, env.local_size));
}

// ---------------------------------------------------------------------------------------------
// World

struct World::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  at::Device device{at::kCPU};  // where the backend's tensors live
  std::chrono::milliseconds timeout{0};
  std::string host;
  std::vector<std::pair<std::string, int>> peers;  // host and pid of every rank
  int rank = 0;
  double seconds = 0;

  // The processes of this machine that are gone: "rank 1 (pid 4242)". A process whose socket just
  // closed may need a moment to become a zombie.
  std::vector<std::string> gone_peers() const {
    std::vector<std::string> gone;
    for (int attempt = 0; attempt < 20 && gone.empty(); ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      for (size_t r = 0; r < peers.size(); ++r) {
        if (static_cast<int>(r) == rank || peers[r].first != host || peers[r].second <= 0) continue;
        if (!process_alive(peers[r].second))
          gone.push_back("rank " + std::to_string(r) + " (pid " + std::to_string(peers[r].second) + ")");
      }
    }
    return gone;
  }

  std::string failure(const std::string& what, const std::string& error) const {
    std::ostringstream os;
    os << what << " failed: " << first_line(error);
    auto gone = gone_peers();
    if (!gone.empty()) {
      for (size_t i = 0; i < gone.size(); ++i) os << (i ? ", " : "; ") << gone[i];
      os << (gone.size() == 1 ? " is" : " are") << " no longer running";
    } else {
      os << "; another process stopped or is stuck (its own error says which; collectives give up after "
         << timeout.count() / 1000 << " s, --dist-timeout)";
    }
    return os.str();
  }

  // Runs a collective and waits for it; any error becomes one that names `what` and a gone process.
  void run(const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      auto work = start();
      work->wait();
    } catch (const c10::Error& e) {
      throw std::runtime_error(failure(what, e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw std::runtime_error(failure(what, e.what()));
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

World::World() = default;
World::~World() = default;

std::string World::name() const { return "rank " + std::to_string(rank_) + " of " + std::to_string(size_); }

std::shared_ptr<World> World::connect(const WorldEnv& env, at::Device device, std::chrono::milliseconds timeout) {
  auto w = std::make_shared<World>();
  if (env.size <= 1) return w;
  if (env.launcher_pid > 0) {  // stop (with a checkpoint) when the launcher goes away
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != env.launcher_pid)
      throw std::runtime_error("the launcher of this process (pid " + std::to_string(env.launcher_pid) + ") is gone");
  }
  // A peer that dies closes its sockets; Gloo's next write to one must fail with EPIPE, which
  // becomes this process's error naming the dead peer, instead of killing it silently by SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  w->rank_ = env.rank;
  w->size_ = env.size;
  w->local_rank_ = env.local_rank;
  auto impl = std::make_unique<Impl>();
  impl->timeout = timeout;
  impl->rank = env.rank;
  impl->host = host_name();
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = !env.agent_store && env.rank == 0;
    so.timeout = timeout;
    so.multiTenant = true;
    if (env.agent_store) {  // the launcher's store: nothing to wait for
      so.waitWorkers = false;
    } else {
      so.numWorkers = static_cast<size_t>(env.size);
      so.waitWorkers = true;
    }
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    impl->store = c10::make_intrusive<c10d::PrefixStore>("peft/" + std::to_string(env.restart), tcp);
  } catch (const c10::Error& e) {
    throw std::runtime_error(rendezvous_failure(env, w->name(), where, e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw std::runtime_error(rendezvous_failure(env, w->name(), where, e.what()));
  }
  try {
    if (device.is_cuda()) {
#if PEFT_WITH_NCCL
      const int index = device.has_index() ? device.index() : env.local_rank;
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
      impl->device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, env.rank, env.size, opts);
#else
      throw std::runtime_error("this build has no NCCL (nccl.h was not found when it was configured): "
                               "distributed training on CUDA needs it");
#endif
    } else {
#if PEFT_WITH_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        std::string first = ifname;
        first = first.substr(0, first.find(','));
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(first));
      } else if (env.all_local()) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.size, opts);
#else
      throw std::runtime_error("this build has no Gloo (libgloo-dev's headers were not found when it was configured: "
                               "run scripts/setup.sh, then cmake again)");
#endif
    }
    impl->store->set("peer/" + std::to_string(env.rank), impl->host + " " + std::to_string(getpid()));
    for (int r = 0; r < env.size; ++r) {
      auto v = impl->store->get("peer/" + std::to_string(r));
      std::istringstream in(std::string(v.begin(), v.end()));
      std::string host;
      int pid = 0;
      in >> host >> pid;
      impl->peers.emplace_back(host, pid);
    }
  } catch (const std::runtime_error&) {
    throw;
  } catch (const c10::Error& e) {
    throw std::runtime_error("joining the " + std::to_string(env.size) + " processes at " + where + " failed for " +
                             w->name() + ": " + first_line(e.what_without_backtrace()));
  }
  w->impl_ = std::move(impl);
  return w;
}

void World::all_reduce_sum(at::Tensor& t, const std::string& what) {
  if (!impl_) return;
  at::Tensor x = t.device() == impl_->device && t.is_contiguous() ? t : t.to(impl_->device).contiguous();
  std::vector<at::Tensor> v{x};
  impl_->run(what, [&] { return impl_->backend->allreduce(v); });
  if (!x.is_same(t)) t.copy_(x);
}

void World::all_reduce_max(at::Tensor& t, const std::string& what) {
  if (!impl_) return;
  at::Tensor x = t.device() == impl_->device && t.is_contiguous() ? t : t.to(impl_->device).contiguous();
  std::vector<at::Tensor> v{x};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp(c10d::ReduceOp::MAX);
  impl_->run(what, [&] { return impl_->backend->allreduce(v, o); });
  if (!x.is_same(t)) t.copy_(x);
}

std::vector<at::Tensor> World::all_gather(const at::Tensor& t, const std::string& what) {
  if (!impl_) return {t.clone()};
  std::vector<at::Tensor> in{t.to(impl_->device).contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < size_; ++r) out[0].push_back(at::empty_like(in[0]));
  impl_->run(what, [&] { return impl_->backend->allgather(out, in); });
  std::vector<at::Tensor> res;
  for (auto& x : out[0]) res.push_back(x.to(t.device()));
  return res;
}

void World::barrier(const std::string& what) {
  if (!impl_) return;
  // An all-reduce of one number: the same rendezvous as a barrier on every backend.
  auto one = at::ones({1}, at::TensorOptions(at::kFloat).device(impl_->device));
  all_reduce_sum(one, what);
}

std::string World::text_of_main(const std::string& key, const std::string& text) {
  if (!impl_) return text;
  try {
    if (rank_ == 0) {
      impl_->store->set("text/" + key, text);
      return text;
    }
    auto v = impl_->store->get("text/" + key);
    return std::string(v.begin(), v.end());
  } catch (const c10::Error& e) {
    throw std::runtime_error(impl_->failure("reading rank 0's " + key + " from the rendezvous store", e.what_without_backtrace()));
  }
}

void World::check_same(uint64_t value, const std::string& what) {
  if (!impl_) return;
  const auto v = static_cast<int64_t>(value & ((uint64_t{1} << 62) - 1));
  auto t = at::tensor(std::vector<int64_t>{v, -v}, at::kLong);
  all_reduce_max(t, "comparing " + what);
  if (t[0].item<int64_t>() != -t[1].item<int64_t>())
    throw std::runtime_error("the " + std::to_string(size_) + " processes disagree on " + what +
                             ": every process must run the same peft, options and data; stopping");
}

void World::all_succeed(const std::function<void()>& fn, const std::string& what) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  if (!impl_) {
    if (error) std::rethrow_exception(error);
    return;
  }
  auto failed = at::zeros({size_}, at::kLong);
  if (error) failed[rank_] = 1;
  all_reduce_max(failed, "the check that every process succeeded in " + what);
  if (error) std::rethrow_exception(error);
  for (int r = 0; r < size_; ++r)
    if (failed[r].item<int64_t>())
      throw std::runtime_error("rank " + std::to_string(r) + " stopped while " + what + " (its error is above); stopping too");
}

double World::take_collective_seconds() {
  if (!impl_) return 0;
  double s = impl_->seconds;
  impl_->seconds = 0;
  return s;
}

// ---------------------------------------------------------------------------------------------
// The launcher

struct StoreServer::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

StoreServer::StoreServer(std::chrono::milliseconds timeout) : impl_(std::make_unique<Impl>()) {
  c10d::TCPStoreOptions so;
  so.port = 0;  // a free port, chosen by the system
  so.isServer = true;
  so.waitWorkers = false;
  so.timeout = timeout;
  so.multiTenant = true;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot start the rendezvous store on this machine: " + first_line(e.what_without_backtrace()));
  }
}

StoreServer::~StoreServer() = default;

int StoreServer::port() const { return impl_->store->getPort(); }

std::string this_program() {
  std::vector<char> buf(4096);
  ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) throw std::runtime_error(std::string("cannot find this program's path (/proc/self/exe): ") + std::strerror(errno));
  return std::string(buf.data(), static_cast<size_t>(n));
}

namespace {

// The children of the running launcher, for the signal handler (which only forwards).
constexpr int kMaxChildren = 1024;
volatile sig_atomic_t launched_count = 0;
pid_t launched[kMaxChildren];
volatile sig_atomic_t forwarded_signal = 0;

extern "C" void forward_signal(int sig) {
  forwarded_signal = sig;
  for (int i = 0; i < launched_count; ++i)
    if (launched[i] > 0) kill(launched[i], sig);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "stopped (status " + std::to_string(status) + ")";
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int launch_local(const LaunchOptions& o) {
  if (o.nprocs < 1 || o.nprocs > kMaxChildren)
    throw std::invalid_argument("--nproc-per-node " + std::to_string(o.nprocs) + ": expected 1 to " + std::to_string(kMaxChildren));
  if (o.argv.empty()) throw std::invalid_argument("launch_local: no program to run");
  auto say = o.say ? o.say : [](const std::string& s) { std::cerr << s << std::flush; };
  StoreServer server(o.timeout);

  // Every child's environment: this one's, less what the launcher sets, plus the torchrun variables.
  std::map<std::string, std::string> common;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) common[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (auto& [k, v] : o.env) common[k] = v;
  common["WORLD_SIZE"] = common["LOCAL_WORLD_SIZE"] = std::to_string(o.nprocs);
  common["GROUP_RANK"] = "0";
  common["MASTER_ADDR"] = "127.0.0.1";
  common["MASTER_PORT"] = std::to_string(server.port());
  common["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  common["PEFT_LAUNCHER_PID"] = std::to_string(getpid());
  common.erase("TORCHELASTIC_RESTART_COUNT");

  std::vector<char*> argv;
  for (auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  struct sigaction forward {}, old_int {}, old_term {};
  forward.sa_handler = forward_signal;
  sigemptyset(&forward.sa_mask);
  forwarded_signal = 0;
  launched_count = 0;
  sigaction(SIGINT, &forward, &old_int);
  sigaction(SIGTERM, &forward, &old_term);

  std::vector<pid_t> pids;
  std::string spawn_error;
  for (int r = 0; r < o.nprocs; ++r) {
    auto env = common;
    env["RANK"] = env["LOCAL_RANK"] = env["ROLE_RANK"] = std::to_string(r);
    std::vector<std::string> kv;
    for (auto& [k, v] : env) kv.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : kv) envp.push_back(const_cast<char*>(s.c_str()));
    envp.push_back(nullptr);
    // Each child in its own process group: Ctrl-C reaches the launcher only, which passes it on once.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, argv[0], nullptr, &attr, argv.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      spawn_error = "cannot start rank " + std::to_string(r) + " (" + o.argv[0] + "): " + std::strerror(rc);
      break;
    }
    pids.push_back(pid);
    launched[launched_count] = pid;
    launched_count = launched_count + 1;
  }

  // Wait for all; after the first failure, give the others `grace` to stop by themselves.
  std::vector<bool> done(pids.size(), false);
  size_t running = pids.size();
  int result = 0;
  bool failed = !spawn_error.empty(), killed = false;
  if (failed) {
    say("peft: " + spawn_error + "; stopping the others\n");
    result = 1;
    for (auto p : pids) kill(p, SIGTERM);
  }
  auto deadline = std::chrono::steady_clock::now() + o.grace;
  while (running > 0) {
    // The children that ended since the last look; one killed by a signal is named before one that
    // exited with an error (usually the error of noticing the other's death).
    std::vector<std::pair<size_t, int>> ended;
    for (size_t r = 0; r < pids.size(); ++r) {
      if (done[r]) continue;
      int status = 0;
      const pid_t p = waitpid(pids[r], &status, WNOHANG);
      if (p == 0 || (p < 0 && errno == EINTR)) continue;
      done[r] = true;
      --running;
      launched[r] = 0;
      ended.emplace_back(r, p > 0 ? status : -1);
    }
    std::stable_sort(ended.begin(), ended.end(), [](const auto& a, const auto& b) {
      return a.second >= 0 && WIFSIGNALED(a.second) && !(b.second >= 0 && WIFSIGNALED(b.second));
    });
    for (auto [r, status] : ended) {
      const bool waited = status >= 0;
      const bool interrupted = waited && forwarded_signal && WIFEXITED(status) && WEXITSTATUS(status) == 128 + forwarded_signal;
      const bool ok = waited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (interrupted && result == 0) result = WEXITSTATUS(status);
      if (failed && !killed && waited && WIFSIGNALED(status))  // not the usual error exit: say so
        say("peft: rank " + std::to_string(r) + " (pid " + std::to_string(pids[r]) + ") " + describe_status(status) + " too\n");
      if (ok || interrupted || killed || failed) continue;
      failed = true;
      result = waited ? exit_code_of(status) : 1;
      say("peft: rank " + std::to_string(r) + " (pid " + std::to_string(pids[r]) + ") " +
          (waited ? describe_status(status) : "could not be waited for") +
          (running ? "; the other processes stop (within " + std::to_string(o.grace.count()) + " s)" : "") + "\n");
      deadline = std::chrono::steady_clock::now() + o.grace;
    }
    if (running == 0) break;
    if (failed && !killed && std::chrono::steady_clock::now() > deadline) {
      say("peft: " + std::to_string(running) + " process(es) still running " + std::to_string(o.grace.count()) +
          " s after the failure: killing them\n");
      for (size_t r = 0; r < pids.size(); ++r)
        if (!done[r]) kill(pids[r], SIGKILL);
      killed = true;
    }
    if (ended.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  launched_count = 0;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace peft
