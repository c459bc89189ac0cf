// Data-parallel training against identities: 2 processes of --batch-size 2 train exactly as 1 process
// of --batch-size 2 x --grad-accum 2 (loss, budgets, rank_pattern, eval loss, adapter), a process that
// is killed stops the other with its name, and --resume latest then equals the uninterrupted run.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "peft/data/data_loader.h"
#include "peft/formats/safetensors.h"
#include "peft/train/distributed.h"
#include "test_util.h"

extern char** environ;

using namespace peft;
using namespace peft::test;
namespace fs = std::filesystem;

namespace {

std::string tiny() { return fixture("tiny"); }

// An AdaLoRA run on the tiny model whose schedule masks several times, with an evaluation mid-way.
std::vector<std::string> train_args(const std::string& out, int steps, int grad_accum) {
  return {"train", "--model", tiny(), "--data", tiny() + "/train.jsonl", "--output-dir", out,
          "--max-steps", std::to_string(steps), "--batch-size", "2", "--grad-accum", std::to_string(grad_accum),
          "--init_r", "6", "--target_r", "2", "--tinit", std::to_string(steps / 8), "--tfinal",
          std::to_string(steps / 4), "--deltaT", "3", "--lr", "5e-3", "--eval-fraction", "0.25",
          "--eval-batch-size", "3", "--eval-steps", std::to_string(steps / 2), "--dist-timeout", "60",
          "--report=false"};
}

std::vector<nlohmann::json> records(const std::string& out, const std::string& type) {
  std::vector<nlohmann::json> r;
  for (auto& j : jsonl(out + "/metrics.jsonl"))
    if (j["type"] == type) r.push_back(j);
  return r;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Two runs of the same global batch train the same: every step's loss and gradient norm within 1e-5
// relative, the same budgets, the same rank_pattern at every mask, the same evaluations, and final
// adapters within 1e-5 relative (of the largest entry of each tensor).
void expect_same_run(const std::string& a, const std::string& b) {
  auto ta = records(a, "train"), tb = records(b, "train");
  ASSERT_EQ(ta.size(), tb.size());
  ASSERT_FALSE(ta.empty());
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i]["step"], tb[i]["step"]);
    EXPECT_LE(rel(ta[i]["loss"].get<double>(), tb[i]["loss"].get<double>()), 1e-5) << "step " << i + 1;
    EXPECT_LE(rel(ta[i]["grad_norm"].get<double>(), tb[i]["grad_norm"].get<double>()), 1e-5) << "step " << i + 1;
    EXPECT_EQ(ta[i]["budget"], tb[i]["budget"]) << "step " << i + 1;
    EXPECT_EQ(ta[i]["tokens"], tb[i]["tokens"]) << "step " << i + 1;
  }
  auto ea = records(a, "eval"), eb = records(b, "eval");
  ASSERT_EQ(ea.size(), eb.size());
  ASSERT_GE(ea.size(), 3u);  // before, mid-way, after
  for (size_t i = 0; i < ea.size(); ++i) {
    EXPECT_EQ(ea[i]["eval_tokens"], eb[i]["eval_tokens"]);
    EXPECT_LE(rel(ea[i]["eval_loss"].get<double>(), eb[i]["eval_loss"].get<double>()), 1e-5) << "evaluation " << i;
  }
  auto ra = jsonl(a + "/ranks.jsonl"), rb = jsonl(b + "/ranks.jsonl");
  ASSERT_EQ(ra.size(), rb.size());
  ASSERT_GE(ra.size(), 3u);  // masks happened
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i]["step"], rb[i]["step"]);
    EXPECT_EQ(ra[i]["budget"], rb[i]["budget"]);
    ASSERT_EQ(ra[i]["modules"].size(), rb[i]["modules"].size());
    for (size_t m = 0; m < ra[i]["modules"].size(); ++m)
      EXPECT_EQ(ra[i]["modules"][m]["pattern"], rb[i]["modules"][m]["pattern"]) << "mask " << i << " module " << m;
  }
  auto aa = load_safetensors(a + "/adapter/adapter_model.safetensors");
  auto ab = load_safetensors(b + "/adapter/adapter_model.safetensors");
  ASSERT_EQ(aa.size(), ab.size());
  for (auto& [k, t] : aa) {
    ASSERT_TRUE(ab.count(k)) << k;
    ASSERT_EQ(t.sizes(), ab[k].sizes()) << k;
    if (t.numel() == 0) continue;
    const double scale = std::max(ab[k].abs().max().item<double>(), 1e-30);
    EXPECT_LE(max_abs_diff(t, ab[k]) / scale, 1e-5) << k;
  }
  EXPECT_EQ(read_json(a + "/adapter/adapter_config.json")["rank_pattern"],
            read_json(b + "/adapter/adapter_config.json")["rank_pattern"]);
}

// A `peft` process in the background, its output in `log`.
struct Child {
  pid_t pid = -1;
  std::string log;
};

// `prefix` runs the program through another (["ip", "netns", "exec", NAME]), found on PATH.
Child spawn_cli(const std::vector<std::string>& args, const std::map<std::string, std::string>& env, const std::string& log,
                const std::vector<std::string>& prefix = {}) {
  std::vector<std::string> kv;
  for (char** e = environ; *e; ++e) {
    std::string s = *e;
    if (!env.count(s.substr(0, s.find('=')))) kv.push_back(s);
  }
  for (auto& [k, v] : env) kv.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : kv) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string program = PEFT_CLI;
  std::vector<std::string> copy = prefix;
  copy.push_back(program);
  copy.insert(copy.end(), args.begin(), args.end());
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, 1, 2);
  Child c;
  c.log = log;
  if (posix_spawnp(&c.pid, argv[0], &files, nullptr, argv.data(), envp.data()) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&files);
  return c;
}

// The exit code of `c`, or -1 (and it is killed) when it has not ended within `seconds`.
int wait_for(const Child& c, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    int status = 0;
    if (waitpid(c.pid, &status, WNOHANG) == c.pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(c.pid, SIGKILL);
  waitpid(c.pid, nullptr, 0);
  return -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The child of `parent` whose environment has RANK=`rank` (from /proc), or -1.
pid_t child_with_rank(pid_t parent, int rank) {
  std::ifstream children("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children");
  for (pid_t pid; children >> pid;) {
    std::istringstream env(read_file("/proc/" + std::to_string(pid) + "/environ"));
    for (std::string var; std::getline(env, var, '\0');)
      if (var == "RANK=" + std::to_string(rank)) return pid;
  }
  return -1;
}

// The reference of the identity: one process, --batch-size 2 x --grad-accum 2, 24 steps.
const std::string& one_process_run() {
  static TempDir dir;
  static std::string out = [] {
    std::string o = dir.str("one");
    auto r = run_cli(train_args(o, 24, 2));
    EXPECT_EQ(r.code, 0) << r.out;
    return o;
  }();
  return out;
}

}  // namespace

TEST(Distributed, EnvironmentIsTorchrunsAndBadValuesNameTheVariable) {
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m](const char* name) -> const char* {
      auto it = m.find(name);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  auto one = parse_world_env(env_of({}));
  EXPECT_FALSE(one.given);
  EXPECT_EQ(one.size, 1);
  auto e = parse_world_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                   {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"},
                                   {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  EXPECT_TRUE(e.given);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.master_addr, "10.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_TRUE(e.agent_store);
  EXPECT_EQ(e.restart, 2);
  EXPECT_FALSE(e.all_local());
  auto local = parse_world_env(env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "1234"}}));
  EXPECT_TRUE(local.all_local());
  EXPECT_EQ(local.local_size, 2);
  EXPECT_FALSE(local.agent_store);

  auto error = [&](std::map<std::string, std::string> m) {
    try {
      parse_world_env(env_of(m));
    } catch (const std::invalid_argument& x) {
      return std::string(x.what());
    }
    return std::string();
  };
  const std::map<std::string, std::string> ok = {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    auto m = ok;
    if (v.empty()) m.erase(k);
    else m[k] = v;
    return m;
  };
  EXPECT_EQ(error(with("RANK", "2")), "RANK=\"2\": expected a whole number from 0 to WORLD_SIZE - 1 = 1");
  EXPECT_EQ(error(with("WORLD_SIZE", "two")), "WORLD_SIZE=\"two\": expected the number of processes, a whole number >= 1");
  EXPECT_EQ(error(with("MASTER_PORT", "70000")), "MASTER_PORT=\"70000\": expected a TCP port from 1 to 65535");
  EXPECT_NE(error(with("MASTER_ADDR", "")).find("WORLD_SIZE=2 but MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(error(with("RANK", "")).find("WORLD_SIZE=\"2\" is set but RANK is not"), std::string::npos);
  EXPECT_NE(error(with("LOCAL_WORLD_SIZE", "3")).find("LOCAL_WORLD_SIZE=\"3\""), std::string::npos);
}

TEST(Distributed, TwoShardsReadTheBatchesOfOneLoaderInItsOrder) {
  std::vector<Example> examples;
  for (int i = 0; i < 9; ++i) examples.push_back({{1, static_cast<int32_t>(10 + i)}, {1, static_cast<int32_t>(10 + i)}, {}});
  Dataset data(examples, DataFormat::Text, 0);
  LoaderOptions lo;
  lo.batch_size = 2;  // 5 batches an epoch: the pairs of batches run across epochs
  lo.seed = 7;
  DataLoader one(data, lo), rank0(data, lo), rank1(data, lo);
  for (int step = 0; step < 12; ++step) {
    auto a = rank0.peek(0), b = rank1.peek(1);
    rank0.advance(2);
    rank1.advance(2);
    EXPECT_EQ(one.next().input_ids, a.input_ids) << "step " << step;
    EXPECT_EQ(one.next().input_ids, b.input_ids) << "step " << step;
    EXPECT_EQ(one.position().epoch, rank1.position().epoch);
    EXPECT_EQ(one.position().step, rank1.position().step);
  }
}

TEST(Distributed, CollectivesOfTwoRanksAndTheirDisagreements) {
  const auto timeout = std::chrono::milliseconds(60000);
  StoreServer server(timeout);
  std::vector<std::string> errors(2), mismatch(2), failed(2);
  std::vector<double> sums(2), maxes(2), text_ok(2);
  std::vector<std::vector<double>> gathered(2);
  auto rank_main = [&](int rank) {
    try {
      WorldEnv env;
      env.given = true;
      env.rank = env.local_rank = rank;
      env.size = env.local_size = 2;
      env.local_size_given = true;
      env.master_addr = "127.0.0.1";
      env.master_port = server.port();
      env.agent_store = true;
      auto w = World::connect(env, at::kCPU, timeout);
      ASSERT_TRUE(w->distributed());
      EXPECT_EQ(w->is_main(), rank == 0);
      auto t = at::full({3}, rank + 1.0, at::kFloat);
      w->all_reduce_sum(t, "a sum");
      sums[rank] = t.sum().item<double>();
      auto m = at::full({1}, rank * 10.0, at::kDouble);
      w->all_reduce_max(m, "a max");
      maxes[rank] = m.item<double>();
      for (auto& g : w->all_gather(at::full({2}, static_cast<int64_t>(rank + 5), at::kLong), "a gather"))
        gathered[rank].push_back(g[1].item<double>());
      text_ok[rank] = w->text_of_main("greeting", rank == 0 ? "from rank 0" : "from rank 1") == "from rank 0";
      w->check_same(42, "the answer");
      try {
        w->check_same(rank == 0 ? 1 : 2, "the AdaLoRA mask after step 3");
      } catch (const std::runtime_error& x) {
        mismatch[rank] = x.what();
      }
      try {
        w->all_succeed([&] { if (rank == 1) throw std::invalid_argument("no data here"); }, "loading the data");
      } catch (const std::exception& x) {
        failed[rank] = x.what();
      }
      w->barrier("the end");
    } catch (const std::exception& x) {
      errors[rank] = x.what();
    }
  };
  std::thread r0(rank_main, 0), r1(rank_main, 1);
  r0.join();
  r1.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  EXPECT_EQ(sums[0], 9.0);  // (1 + 2) x 3 on both
  EXPECT_EQ(sums[1], 9.0);
  EXPECT_EQ(maxes[0], 10.0);
  EXPECT_EQ(maxes[1], 10.0);
  EXPECT_EQ(gathered[0], (std::vector<double>{5, 6}));
  EXPECT_EQ(gathered[1], (std::vector<double>{5, 6}));
  EXPECT_TRUE(text_ok[0] && text_ok[1]);
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(mismatch[r].find("the 2 processes disagree on the AdaLoRA mask after step 3"), std::string::npos) << mismatch[r];
  EXPECT_EQ(failed[1], "no data here");  // its own error where it failed
  EXPECT_EQ(failed[0], "rank 1 stopped while loading the data (its error is above); stopping too");
}

TEST(Distributed, TwoProcessesTrainAsOneWithTheSameGlobalBatch) {
  TempDir tmp;
  const std::string two = tmp.str("two");
  auto r = run_cli(plus(train_args(two, 24, 1), {"--nproc-per-node", "2"}));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("global batch 4 = --batch-size 2 per process x 2 processes x --grad-accum 1"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("step 1/24"), r.out.rfind("step 1/24")) << "only rank 0 prints:\n" << r.out;
  expect_same_run(two, one_process_run());
}

TEST(Distributed, TorchrunStartsTheSameRun) {
  const std::string torchrun = std::string(PEFT_SOURCE_DIR) + "/.venv/bin/torchrun";
  // The torch wheel of the project's .venv (scripts/setup.sh, run by make test) installs torchrun.
  ASSERT_TRUE(fs::exists(torchrun)) << "no " << torchrun << ": run scripts/setup.sh";
  TempDir tmp;
  const std::string out = tmp.str("torchrun");
  std::string cmd = shell_quote(torchrun) + " --standalone --nproc-per-node 2 --no-python " + shell_quote(PEFT_CLI);
  for (auto& a : train_args(out, 24, 1)) cmd += " " + shell_quote(a);
  const CliResult r = run_shell(cmd);
  ASSERT_EQ(r.code, 0) << r.out;
  expect_same_run(out, one_process_run());
}

TEST(Distributed, AKilledProcessStopsTheOtherAndResumeEqualsTheUninterruptedRun) {
  TempDir tmp;
  const std::string one = tmp.str("one"), two = tmp.str("two");
  const int steps = 120;
  auto reference = run_cli(train_args(one, steps, 2));
  ASSERT_EQ(reference.code, 0) << reference.out;

  auto args = plus(train_args(two, steps, 1), {"--nproc-per-node", "2", "--save-steps", "4"});
  Child launcher = spawn_cli(args, {}, tmp.str("killed.log"));
  ASSERT_GT(launcher.pid, 0);
  // Once a few steps and a checkpoint are done, kill rank 1 outright.
  pid_t victim = -1;
  for (int i = 0; i < 6000 && victim < 0; ++i) {
    if (records(two, "train").size() >= 6) victim = child_with_rank(launcher.pid, 1);
    else std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int status = 0;
    if (victim < 0 && waitpid(launcher.pid, &status, WNOHANG) == launcher.pid) FAIL() << read_file(launcher.log);
  }
  ASSERT_GT(victim, 0) << read_file(launcher.log);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const int code = wait_for(launcher, 120);  // the survivor and the launcher stop on their own
  const std::string log = read_file(launcher.log);
  ASSERT_NE(code, -1) << "the run did not stop after rank 1 was killed:\n" << log;
  EXPECT_EQ(code, 128 + SIGKILL) << log;
  const std::string who = "rank 1 (pid " + std::to_string(victim) + ")";
  EXPECT_NE(log.find(who + " was killed by signal 9"), std::string::npos) << log;     // the launcher
  EXPECT_NE(log.find("rank 0 of 2: "), std::string::npos) << log;                      // the survivor's error
  EXPECT_NE(log.find(who + " is no longer running"), std::string::npos) << log;
  ASSERT_LT(records(two, "train").size(), static_cast<size_t>(steps)) << log;

  auto resumed = run_cli(plus(args, {"--resume", "latest"}));
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;
  expect_same_run(two, one);
}

TEST(Distributed, ProcessesStartedWithDifferentOptionsAreRefused) {
  TempDir tmp;
  const auto timeout = std::chrono::milliseconds(60000);
  StoreServer server(timeout);
  std::vector<Child> ranks;
  for (int r = 0; r < 2; ++r) {
    auto args = train_args(tmp.str("run"), 24, 1);
    if (r == 1) args = plus(args, {"--lr", "0.01"});
    ranks.push_back(spawn_cli(args,
                              {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                               {"MASTER_PORT", std::to_string(server.port())}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}},
                              tmp.str("rank" + std::to_string(r) + ".log")));
  }
  for (auto& c : ranks) EXPECT_EQ(wait_for(c, 120), 1) << read_file(c.log);
  EXPECT_NE(read_file(ranks[1].log).find("rank 1 of 2: this process was started with --lr 0.01, rank 0 with 0.005"),
            std::string::npos) << read_file(ranks[1].log);
  EXPECT_NE(read_file(ranks[0].log).find("rank 1 stopped while preparing the run"), std::string::npos)
      << read_file(ranks[0].log);
  EXPECT_FALSE(fs::exists(tmp.str("run") + "/metrics.jsonl") && !jsonl(tmp.str("run") + "/metrics.jsonl").empty());
}

TEST(Distributed, AMissingRendezvousVariableIsNamed) {
  TempDir tmp;
  auto r = run_cli(train_args(tmp.str("run"), 24, 1), "RANK=0 WORLD_SIZE=2 MASTER_PORT=29500");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("WORLD_SIZE=2 but MASTER_ADDR is not set"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.str("run")));
}

// Two hosts: two network namespaces joined by a veth pair, each with its own address, so rank 1
// reaches rank 0 only over that link (MASTER_ADDR = rank 0's address, GLOO_SOCKET_IFNAME = the
// link), one process per host as a job scheduler starts them. The run equals the one-process run.
// Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); without it the test is skipped.
struct TwoHosts {
  std::string a, b;  // namespace names; the links are <name>l
  bool ok = false;
  std::string error;
  TwoHosts() {
    const std::string id = std::to_string(getpid());
    a = "pefta" + id, b = "peftb" + id;
    const std::string la = a + "l", lb = b + "l";
    const CliResult r = run_shell("ip netns add " + a + " && ip netns add " + b + " && ip link add " + la +
                                  " type veth peer name " + lb + " && ip link set " + la + " netns " + a +
                                  " && ip link set " + lb + " netns " + b + " && ip -n " + a + " addr add 10.213.0.1/24 dev " +
                                  la + " && ip -n " + b + " addr add 10.213.0.2/24 dev " + lb + " && ip -n " + a +
                                  " link set " + la + " up && ip -n " + b + " link set " + lb + " up && ip -n " + a +
                                  " link set lo up && ip -n " + b + " link set lo up");
    ok = r.code == 0;
    error = r.out;
  }
  ~TwoHosts() { run_shell("ip netns del " + a + "; ip netns del " + b); }
};

TEST(Distributed, TwoHostsOverANetworkLinkTrainAsOneProcess) {
  TwoHosts hosts;
  if (!hosts.ok) GTEST_SKIP() << "cannot create network namespaces here (needs root): " << hosts.error;
  TempDir tmp;
  const std::string out = tmp.str("two-hosts");
  std::vector<Child> ranks;
  for (int r = 0; r < 2; ++r) {
    const std::string host = r == 0 ? hosts.a : hosts.b;
    ranks.push_back(spawn_cli(train_args(out, 24, 1),
                              {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"},
                               {"LOCAL_WORLD_SIZE", "1"}, {"MASTER_ADDR", "10.213.0.1"}, {"MASTER_PORT", "29517"},
                               {"GLOO_SOCKET_IFNAME", host + "l"}, {"PEFT_NUM_THREADS", "1"}},
                              tmp.str("rank" + std::to_string(r) + ".log"), {"ip", "netns", "exec", host}));
    ASSERT_GT(ranks.back().pid, 0);
  }
  for (auto& c : ranks) ASSERT_EQ(wait_for(c, 300), 0) << read_file(c.log);
  expect_same_run(out, one_process_run());
}
