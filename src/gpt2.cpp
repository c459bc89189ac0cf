// GPT-2 (GPT2LMHeadModel): Conv1D projections stored (in, out), learned position embeddings,
// pre-LayerNorm blocks, gelu_new, and the lm_head tied to the token embeddings.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include "peft/compat.h"
#include "peft/families.h"
#include "peft/layers.h"

namespace peft {
namespace {

struct GPT2Attention : torch::nn::Module {
  GPT2Attention(const ModelConfig& c) : heads(c.num_attention_heads), head_dim(c.head_dim), embd(c.hidden_size) {
    c_attn = register_module("c_attn", Linear(embd, 3 * embd, true, /*fan_in_fan_out=*/true));
    c_proj = register_module("c_proj", Linear(embd, embd, true, true));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, KVCache* cache, size_t layer) {
    auto B = x.size(0), T = x.size(1);
    auto qkv = c_attn->forward(x).split(embd, -1);
    auto shape = [&](const at::Tensor& t) { return t.view({B, T, heads, head_dim}).transpose(1, 2); };
    auto q = shape(qkv[0]), k = shape(qkv[1]), v = shape(qkv[2]);
    if (cache) cache->append(layer, k, v);
    auto out = compat::attention(q, k, v, mask, true, 1.0 / std::sqrt(static_cast<double>(head_dim)));
    return c_proj->forward(out.transpose(1, 2).reshape({B, T, embd}));
  }
  int64_t heads, head_dim, embd;
  Linear c_attn{nullptr}, c_proj{nullptr};
};

struct GPT2MLP : torch::nn::Module {
  GPT2MLP(const ModelConfig& c) : act(c.hidden_act) {
    c_fc = register_module("c_fc", Linear(c.hidden_size, c.intermediate_size, true, true));
    c_proj = register_module("c_proj", Linear(c.intermediate_size, c.hidden_size, true, true));
  }
  at::Tensor forward(const at::Tensor& x) { return c_proj->forward(activation(c_fc->forward(x), act)); }
  std::string act;
  Linear c_fc{nullptr}, c_proj{nullptr};
};

struct GPT2Block : torch::nn::Module {
  GPT2Block(const ModelConfig& c) {
    ln_1 = register_module("ln_1", std::make_shared<LayerNormImpl>(c.hidden_size, c.norm_eps));
    attn = register_module("attn", std::make_shared<GPT2Attention>(c));
    ln_2 = register_module("ln_2", std::make_shared<LayerNormImpl>(c.hidden_size, c.norm_eps));
    mlp = register_module("mlp", std::make_shared<GPT2MLP>(c));
  }
  std::shared_ptr<LayerNormImpl> ln_1, ln_2;
  std::shared_ptr<GPT2Attention> attn;
  std::shared_ptr<GPT2MLP> mlp;
};

struct GPT2Model : torch::nn::Module {
  GPT2Model(const ModelConfig& c) {
    wte = register_module("wte", std::make_shared<EmbeddingImpl>(c.vocab_size, c.hidden_size));
    wpe = register_module("wpe", std::make_shared<EmbeddingImpl>(c.max_position_embeddings, c.hidden_size));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) h->push_back(std::make_shared<GPT2Block>(c));
    ln_f = register_module("ln_f", std::make_shared<LayerNormImpl>(c.hidden_size, c.norm_eps));
  }
  std::shared_ptr<EmbeddingImpl> wte, wpe;
  torch::nn::ModuleList h;
  std::shared_ptr<LayerNormImpl> ln_f;
};

class GPT2LMHeadModel : public Model {
 public:
  explicit GPT2LMHeadModel(const ModelConfig& c) : Model(c) {
    transformer = register_module("transformer", std::make_shared<GPT2Model>(c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }

  ModelOutput forward(const Batch& b) override {
    auto T = b.input_ids.size(1);
    int64_t past = b.cache ? b.cache->length() : 0;
    if (past + T > config_.max_position_embeddings) {
      throw std::runtime_error("GPT-2: sequence of " + std::to_string(past + T) + " tokens exceeds n_positions (" +
                               std::to_string(config_.max_position_embeddings) + ")");
    }
    auto positions = b.position_ids.defined() ? b.position_ids
                                              : at::arange(past, past + T, b.input_ids.options().dtype(at::kLong)).unsqueeze(0);
    auto x = transformer->wte->forward(b.input_ids) + transformer->wpe->forward(positions);
    at::Tensor mask;
    if (b.attention_mask.defined()) mask = padding_mask(b.attention_mask, x.scalar_type());
    for (size_t i = 0; i < transformer->h->size(); ++i) {
      auto block = transformer->h->ptr<GPT2Block>(i);
      x = x + block->attn->forward(block->ln_1->forward(x), mask, b.cache, i);
      x = x + block->mlp->forward(block->ln_2->forward(x));
    }
    x = transformer->ln_f->forward(x);
    ModelOutput out;
    out.logits = lm_head ? lm_head->forward(x) : at::matmul(x, transformer->wte->weight.t());
    if (b.labels.defined()) out.loss = causal_lm_loss(out.logits, b.labels);
    return out;
  }

  std::vector<std::string> default_target_modules() const override { return {"c_attn"}; }

  std::shared_ptr<GPT2Model> transformer;
  Linear lm_head{nullptr};
};

}  // namespace

std::shared_ptr<Model> make_gpt2(const ModelConfig& c) { return std::make_shared<GPT2LMHeadModel>(c); }

}  // namespace peft
