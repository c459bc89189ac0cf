// GPT-2 (GPT2LMHeadModel): Conv1D projections stored (in, out), learned position embeddings,
// pre-LayerNorm blocks, gelu_new, and the lm_head tied to the token embeddings.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include "models/families.h"
#include "peft/layers/attention.h"
#include "peft/layers/frozen_linear.h"
#include "peft/layers/layers.h"

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
    auto out = attention(q, k, v, mask, true, 1.0 / std::sqrt(static_cast<double>(head_dim)));
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
    at::Tensor mask = causal_padding_mask(b, x.scalar_type());
    for (size_t i = 0; i < transformer->h->size(); ++i) {
      auto block = transformer->h->ptr<GPT2Block>(i);
      KVCache* cache = b.cache;
      x = run_block([block, mask, cache, i](const at::Tensor& in) {
            at::Tensor y = in + block->attn->forward(block->ln_1->forward(in), mask, cache, i);
            return y + block->mlp->forward(block->ln_2->forward(y));
          }, x, cache != nullptr);
    }
    x = transformer->ln_f->forward(x);
    ModelOutput out;
    out.logits = lm_head ? lm_head->forward(x) : tied_lm_head(x, transformer->wte->weight);
    if (b.labels.defined()) out.loss = causal_lm_loss(out.logits, b.labels);
    return out;
  }

  std::vector<std::string> default_target_modules() const override { return {"c_attn"}; }

  std::shared_ptr<GPT2Model> transformer;
  Linear lm_head{nullptr};
};


void read_gpt2_config(const ConfigReader& r, ModelConfig& c) {
  if (c.architecture.empty()) c.architecture = "GPT2LMHeadModel";
  if (c.architecture != "GPT2LMHeadModel") {
    r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported_models());
  }
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("n_embd");
  c.num_hidden_layers = r.positive("n_layer");
  c.num_attention_heads = r.positive("n_head");
  c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = c.hidden_size / c.num_attention_heads;
  if (r.has("n_inner"))
    c.intermediate_size = r.positive("n_inner");
  else if (__builtin_mul_overflow(c.hidden_size, int64_t{4}, &c.intermediate_size))
    r.fail("n_embd", "too large for the default n_inner (4 * n_embd), got " + std::to_string(c.hidden_size));
  c.max_position_embeddings = r.positive("n_positions");
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  c.hidden_act = r.string("activation_function", "gelu_new");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
  if (c.hidden_act != "gelu_new" && c.hidden_act != "gelu" && c.hidden_act != "relu") {
    r.fail("activation_function", "\"" + c.hidden_act + "\" is not supported (supported: gelu_new, gelu, relu)");
  }
  if (r.boolean("scale_attn_by_inverse_layer_idx", false) || r.boolean("reorder_and_upcast_attn", false)) {
    r.fail("scale_attn_by_inverse_layer_idx", "GPT-2 attention variants are not supported");
  }
  c.position_limit = c.max_position_embeddings;  // learned positions: generation stops there
  if (c.hidden_size % c.num_attention_heads != 0) {
    throw std::runtime_error(r.origin + ": hidden_size (" + std::to_string(c.hidden_size) +
                             ") is not a multiple of the number of heads (" +
                             std::to_string(c.num_attention_heads) + ")");
  }
}

}  // namespace

ModelFamily gpt2_family() {
  return {"gpt2", {"gpt2"}, "GPT2LMHeadModel (gpt2)", read_gpt2_config,
          [](const ModelConfig& c) -> std::shared_ptr<Model> { return std::make_shared<GPT2LMHeadModel>(c); }};
}

}  // namespace peft
