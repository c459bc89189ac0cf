// A scope in evaluation mode: dropout off for evaluation and generation, the caller's training mode
// put back afterwards, also when an exception leaves the scope. For Model and PeftModel alike.
#pragma once

namespace peft {

template <typename M>
class EvalMode {
 public:
  explicit EvalMode(M& model) : model_(model), was_training_(model.is_training()) { model_.train(false); }
  ~EvalMode() { model_.train(was_training_); }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  M& model_;
  bool was_training_;
};

}  // namespace peft
