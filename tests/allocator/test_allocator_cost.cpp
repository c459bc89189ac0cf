// The rank allocator's cost must not grow as one kernel per module: the ATen operations that
// update_and_allocate and the orthogonal penalty dispatch (views excluded: they launch no kernel)
// are counted for models of 2 and 6 layers (14 and 42 adapted modules) and must be as many.
#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>

#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/models/model_family.h"

using namespace peft;

namespace {

std::atomic<int64_t> g_ops{0};

// Operations that only make a view of their input, or are no-ops on real tensors: no kernel.
bool is_view(const char* name) {
  for (const char* v : {"aten::unsqueeze", "aten::view", "aten::select", "aten::narrow", "aten::slice",
                        "aten::as_strided", "aten::alias", "aten::transpose", "aten::expand", "aten::flatten",
                        "aten::reshape", "aten::unbind", "aten::squeeze", "aten::t", "aten::detach",
                        "aten::resolve_conj", "aten::resolve_neg"}) {
    if (std::strcmp(name, v) == 0) return true;
  }
  return false;
}

std::unique_ptr<at::ObserverContext> count_op(const at::RecordFunction& fn) {
  if (fn.scope() == at::RecordScope::FUNCTION && !is_view(fn.name())) ++g_ops;
  return nullptr;
}

// Counts the top-level ATen operations `fn` dispatches on this thread.
template <typename F>
int64_t count_ops(F&& fn) {
  at::RecordFunctionGuard enable(true);
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(count_op).scopes({at::RecordScope::FUNCTION}));
  g_ops = 0;
  fn();
  at::removeCallback(handle);
  return g_ops.load();
}

struct Counts {
  int64_t update, mask, frozen, penalty;
};

Counts allocator_ops(int64_t layers) {
  nlohmann::json j = {{"model_type", "llama"},      {"hidden_size", 32},  {"intermediate_size", 48},
                      {"num_hidden_layers", layers}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", 64},            {"max_position_embeddings", 64}};
  auto base = build_model(parse_model_config(j));
  AdapterConfig c;
  c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  c.init_r = 6;
  c.target_r = 2;
  c.tinit = 1;
  c.tfinal = 2;
  c.deltaT = 2;
  c.total_step = 10;
  PeftModel m(base, c);
  EXPECT_EQ(static_cast<int64_t>(m.modules().size()), 7 * layers);
  Batch b;
  b.input_ids = at::randint(0, 64, {2, 8}, at::kLong);
  b.labels = b.input_ids;
  m.train(true);
  m.forward(b).loss.backward();
  Counts k;
  k.update = count_ops([&] { m.update_and_allocate(3); });   // budgeting, no mask (3 % 2 != 0)
  k.mask = count_ops([&] { m.update_and_allocate(4); });     // budgeting, mask
  k.frozen = count_ops([&] { m.update_and_allocate(9); });   // after the final mask
  k.penalty = count_ops([&] { m.orthogonal_penalty(); });
  return k;
}

}  // namespace

TEST(AllocatorCost, OperationCountDoesNotGrowWithModules) {
  auto small = allocator_ops(2), large = allocator_ops(6);
  std::cout << "[ ops ] update " << small.update << "/" << large.update << ", mask " << small.mask << "/" << large.mask
            << ", frozen " << small.frozen << "/" << large.frozen << ", penalty " << small.penalty << "/"
            << large.penalty << " (14 / 42 modules)\n";
  EXPECT_GT(small.update, 0);
  EXPECT_EQ(small.update, large.update);
  EXPECT_EQ(small.mask, large.mask);
  EXPECT_EQ(small.frozen, large.frozen);
  EXPECT_EQ(small.penalty, large.penalty);
}
