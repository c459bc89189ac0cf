// Using peft.cpp as a library in your own training loop: AdaLoRA on a Hugging Face model, with
// update_and_allocate called once per optimizer step. Build: the CMake target peft_example_custom_loop.
//
// usage: peft_example_custom_loop MODEL_DIR OUTPUT_ADAPTER_DIR [STEPS]
#include <iostream>

#include "peft/models/model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/adapters/peft_model.h"
#include "peft/core/runtime.h"
#include "peft/text/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR OUTPUT_ADAPTER_DIR [STEPS]\n";
    return 2;
  }
  peft::init_runtime();
  const std::string model_dir = argv[1], out = argv[2];
  const int64_t steps = argc > 3 ? std::stoll(argv[3]) : 20;

  // 1. The base model and its tokenizer, as Hugging Face saved them.
  auto base = peft::load_model(model_dir);
  auto tokenizer = peft::Tokenizer::from_file(model_dir + "/tokenizer.json");

  // 2. AdaLoRA on the attention projections, PEFT's names and meanings.
  peft::AdapterConfig config;
  config.peft_type = peft::PeftType::AdaLora;
  config.target_modules = {"q_proj", "v_proj"};
  config.init_r = 8;
  config.target_r = 2;
  config.lora_alpha = 16;
  config.tinit = steps / 10;
  config.tfinal = steps / 5;
  config.deltaT = 2;
  config.total_step = steps;  // optimizer steps, not micro-batches
  peft::PeftModel model(base, config);

  // 3. AdamW over every trainable tensor (they live in one flat buffer).
  peft::AdamW optimizer(model.params(), {/*lr=*/5e-3, 0.9, 0.999, 1e-8, /*weight_decay=*/0.0});

  auto ids32 = tokenizer.encode("the singular values that matter stay, the rest fall to zero");
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  peft::Batch batch;
  batch.input_ids = at::tensor(ids, at::kLong).unsqueeze(0);
  batch.labels = batch.input_ids;  // causal LM: the model shifts the labels itself

  model.train(true);
  for (int64_t step = 0; step < steps; ++step) {
    auto out_step = model.forward(batch);  // loss includes AdaLoRA's orthogonal penalty
    out_step.loss.backward();
    optimizer.step();
    auto event = model.update_and_allocate(step);  // after optimizer.step(), before zero_grad()
    model.params().zero_grad();
    std::cout << "step " << step << " loss " << out_step.loss.item<double>() << " budget " << event.budget
              << (event.masked ? " (mask)" : "") << "\n";
  }
  model.save(out);  // adapter_config.json + adapter_model.safetensors, loadable by PEFT
  std::cout << "saved " << out << "\n";
  return 0;
}
