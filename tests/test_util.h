// Helpers shared by the tests: fixture paths, reading a golden case's data.json, temp directories.
// Expected values always come from the fixtures (the reference libraries), never from our own output.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace peft::test
