// Helpers shared by the tests: fixture paths, golden data.json batches, temp directories, running `peft`.
// Expected values always come from the fixtures (the reference libraries), never from our own output.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace peft::test {

inline std::string fixture(const std::string& rel) { return std::string(PEFT_TEST_DATA) + "/" + rel; }
inline std::string golden(const std::string& c) { return fixture("golden/" + c); }

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  nlohmann::json j;
  in >> j;
  return j;
}

// batches[i] of a golden data.json as an int64 tensor (B, T).
inline at::Tensor golden_batch(const nlohmann::json& data, size_t i) {
  const auto& b = data["batches"][i];
  int64_t B = b.size(), T = b[0].size();
  auto t = at::empty({B, T}, at::kLong);
  auto acc = t.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r)
    for (int64_t c = 0; c < T; ++c) acc[r][c] = b[r][c].get<int64_t>();
  return t;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// A fresh directory under the system temp dir, removed when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "peft-test-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) throw std::runtime_error("mkdtemp failed");
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str(const std::string& rel = "") const { return rel.empty() ? path.string() : (path / rel).string(); }
};

// Runs the `peft` program with `args` (each quoted for the shell), stdout and stderr together.
struct CliResult {
  int code = -1;
  std::string out;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the shell command line `cmd`, stdout and stderr together; code -1 when it did not exit normally.
inline CliResult run_shell(const std::string& cmd) {
  CliResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline CliResult run_cli(const std::vector<std::string>& args, const std::string& env = "") {
  std::string cmd = env + (env.empty() ? "" : " ") + shell_quote(PEFT_CLI);
  for (auto& a : args) cmd += " " + shell_quote(a);
  return run_shell(cmd);
}

// `a` followed by `b`: a command line with more flags.
inline std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Every line of a JSONL file that a run wrote, parsed strictly (a line that is not JSON fails the
// test: the run files must stay valid); none when the file does not exist yet.
inline std::vector<nlohmann::json> jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace peft::test
