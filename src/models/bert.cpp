// BERT and RoBERTa encoders (BertModel, BertForSequenceClassification, RobertaModel,
// RobertaForSequenceClassification): post-LayerNorm blocks, token types, padding masks, heads.
#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include "core/compat.h"
#include "models/families.h"
#include "peft/layers/layers.h"

namespace peft {
namespace {

struct Embeddings : torch::nn::Module {
  Embeddings(const ModelConfig& c) {
    word_embeddings = register_module("word_embeddings", std::make_shared<EmbeddingImpl>(c.vocab_size, c.hidden_size));
    position_embeddings =
        register_module("position_embeddings", std::make_shared<EmbeddingImpl>(c.max_position_embeddings, c.hidden_size));
    token_type_embeddings =
        register_module("token_type_embeddings", std::make_shared<EmbeddingImpl>(c.type_vocab_size, c.hidden_size));
    LayerNorm = register_module("LayerNorm", std::make_shared<LayerNormImpl>(c.hidden_size, c.norm_eps));
  }
  std::shared_ptr<EmbeddingImpl> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<LayerNormImpl> LayerNorm;
};

struct SelfAttention : torch::nn::Module {
  SelfAttention(const ModelConfig& c) {
    query = register_module("query", Linear(c.hidden_size, c.hidden_size, true));
    key = register_module("key", Linear(c.hidden_size, c.hidden_size, true));
    value = register_module("value", Linear(c.hidden_size, c.hidden_size, true));
  }
  Linear query{nullptr}, key{nullptr}, value{nullptr};
};

struct DenseNorm : torch::nn::Module {  // BertSelfOutput / BertOutput: dense, then LayerNorm(x + residual)
  DenseNorm(int64_t in, const ModelConfig& c) {
    dense = register_module("dense", Linear(in, c.hidden_size, true));
    LayerNorm = register_module("LayerNorm", std::make_shared<LayerNormImpl>(c.hidden_size, c.norm_eps));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual) {
    return LayerNorm->forward(dense->forward(x) + residual);
  }
  Linear dense{nullptr};
  std::shared_ptr<LayerNormImpl> LayerNorm;
};

struct Attention : torch::nn::Module {
  Attention(const ModelConfig& c) {
    self = register_module("self", std::make_shared<SelfAttention>(c));
    output = register_module("output", std::make_shared<DenseNorm>(c.hidden_size, c));
  }
  std::shared_ptr<SelfAttention> self;
  std::shared_ptr<DenseNorm> output;
};

struct Intermediate : torch::nn::Module {
  Intermediate(const ModelConfig& c) { dense = register_module("dense", Linear(c.hidden_size, c.intermediate_size, true)); }
  Linear dense{nullptr};
};

struct Layer : torch::nn::Module {
  Layer(const ModelConfig& c) : heads(c.num_attention_heads), head_dim(c.head_dim), act(c.hidden_act) {
    attention = register_module("attention", std::make_shared<Attention>(c));
    intermediate = register_module("intermediate", std::make_shared<Intermediate>(c));
    output = register_module("output", std::make_shared<DenseNorm>(c.intermediate_size, c));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) {
    auto B = x.size(0), T = x.size(1);
    auto shape = [&](const at::Tensor& t) { return t.view({B, T, heads, head_dim}).transpose(1, 2); };
    auto* sa = attention->self.get();
    auto ctx = compat::attention(shape(sa->query->forward(x)), shape(sa->key->forward(x)), shape(sa->value->forward(x)),
                                 mask, false, 1.0 / std::sqrt(static_cast<double>(head_dim)));
    auto a = attention->output->forward(ctx.transpose(1, 2).reshape({B, T, heads * head_dim}), x);
    return output->forward(activation(intermediate->dense->forward(a), act), a);
  }
  int64_t heads, head_dim;
  std::string act;
  std::shared_ptr<Attention> attention;
  std::shared_ptr<Intermediate> intermediate;
  std::shared_ptr<DenseNorm> output;
};

struct Encoder : torch::nn::Module {
  Encoder(const ModelConfig& c) {
    layer = register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(std::make_shared<Layer>(c));
  }
  torch::nn::ModuleList layer;
};

struct Pooler : torch::nn::Module {
  Pooler(const ModelConfig& c) { dense = register_module("dense", Linear(c.hidden_size, c.hidden_size, true)); }
  Linear dense{nullptr};
};

struct EncoderModel : torch::nn::Module {  // BertModel / RobertaModel
  EncoderModel(const ModelConfig& c, bool with_pooler) {
    embeddings = register_module("embeddings", std::make_shared<Embeddings>(c));
    encoder = register_module("encoder", std::make_shared<Encoder>(c));
    if (with_pooler) pooler = register_module("pooler", std::make_shared<Pooler>(c));
  }
  std::shared_ptr<Embeddings> embeddings;
  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<Pooler> pooler;
};

struct RobertaHead : torch::nn::Module {  // RobertaClassificationHead: dense, tanh, out_proj on <s>
  RobertaHead(const ModelConfig& c) {
    dense = register_module("dense", Linear(c.hidden_size, c.hidden_size, true));
    out_proj = register_module("out_proj", Linear(c.hidden_size, c.num_labels, true));
  }
  Linear dense{nullptr}, out_proj{nullptr};
};

class EncoderForClassification : public Model {
 public:
  explicit EncoderForClassification(const ModelConfig& c) : Model(c), roberta_(c.model_type == "roberta") {
    bool classify = c.num_labels > 0;
    // BERT's classifier reads the pooler; RoBERTa's head has its own dense layer and no pooler.
    encoder_ = register_module(roberta_ ? "roberta" : "bert", std::make_shared<EncoderModel>(c, !(roberta_ && classify)));
    if (classify) {
      if (roberta_) roberta_head_ = register_module("classifier", std::make_shared<RobertaHead>(c));
      else classifier_ = register_module("classifier", Linear(c.hidden_size, c.num_labels, true));
    }
  }

  ModelOutput forward(const Batch& b) override {
    const auto& ids = b.input_ids;
    auto B = ids.size(0), T = ids.size(1);
    auto* emb = encoder_->embeddings.get();
    at::Tensor positions;
    if (roberta_) {  // padding_idx + running count of non-padding tokens; padding keeps padding_idx
      auto not_pad = ids.ne(config_.pad_token_id).to(at::kLong);
      positions = at::cumsum(not_pad, 1) * not_pad + config_.pad_token_id;
    } else {
      positions = at::arange(T, ids.options().dtype(at::kLong)).unsqueeze(0).expand({B, T});
    }
    auto types = b.token_type_ids.defined() ? b.token_type_ids : at::zeros_like(ids);
    auto x = emb->word_embeddings->forward(ids) + emb->token_type_embeddings->forward(types) +
             emb->position_embeddings->forward(positions);
    x = emb->LayerNorm->forward(x);
    at::Tensor mask;
    if (b.attention_mask.defined()) mask = padding_mask(b.attention_mask, x.scalar_type());
    for (size_t i = 0; i < encoder_->encoder->layer->size(); ++i) {
      auto layer = encoder_->encoder->layer->ptr<Layer>(i);
      x = run_block([layer, mask](const at::Tensor& in) { return layer->forward(in, mask); }, x, false);
    }
    ModelOutput out;
    if (config_.num_labels == 0) {
      out.logits = x;
      return out;
    }
    auto cls = x.select(1, 0);
    if (roberta_) {
      out.logits = roberta_head_->out_proj->forward(at::tanh(roberta_head_->dense->forward(cls)));
    } else {
      out.logits = classifier_->forward(at::tanh(encoder_->pooler->dense->forward(cls)));
    }
    if (b.labels.defined()) out.loss = classification_loss(out.logits, b.labels);
    return out;
  }

  at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& labels) const {
    auto lf = logits.to(at::kFloat);
    std::string kind = config_.problem_type;
    if (kind.empty()) {
      kind = config_.num_labels == 1 ? "regression"
             : at::isIntegralType(labels.scalar_type(), false) ? "single_label_classification"
                                                              : "multi_label_classification";
    }
    if (kind == "regression") {
      return at::mse_loss(lf.squeeze(), labels.to(at::kFloat).squeeze());
    }
    if (kind == "single_label_classification") {
      return at::cross_entropy_loss(lf.view({-1, config_.num_labels}), labels.view({-1}).to(at::kLong));
    }
    return at::binary_cross_entropy_with_logits(lf, labels.to(at::kFloat));
  }

  std::vector<std::string> default_target_modules() const override { return {"query", "value"}; }
  // PEFT's AdaLoRA default for RoBERTa also adapts key and the dense layers.
  std::vector<std::string> default_adalora_target_modules() const override {
    if (roberta_) return {"query", "key", "value", "dense"};
    return default_target_modules();
  }
  std::vector<std::string> head_modules() const override { return {"classifier", "score"}; }

 private:
  bool roberta_;
  std::shared_ptr<EncoderModel> encoder_;
  Linear classifier_{nullptr};
  std::shared_ptr<RobertaHead> roberta_head_;
};


void read_bert_config(const ConfigReader& r, ModelConfig& c) {
  const std::string& mt = c.model_type;
  c.family = mt;  // "bert" or "roberta"
  const std::string base = mt == "bert" ? "Bert" : "Roberta";
  if (c.architecture.empty()) c.architecture = base + "Model";
  c.is_causal_lm = false;
  if (c.architecture == base + "ForSequenceClassification") {
    c.num_labels = 2;
    if (r.has("id2label") && r.j.at("id2label").is_object()) c.num_labels = static_cast<int64_t>(r.j.at("id2label").size());
    c.num_labels = r.integer("num_labels", c.num_labels);
    if (c.num_labels <= 0) r.fail("num_labels", "must be > 0");
  } else if (c.architecture != base + "Model") {
    r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported_models());
  }
  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_attention_heads = r.positive("num_attention_heads");
  c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.max_position_embeddings = r.positive("max_position_embeddings");
  c.norm_eps = r.number("layer_norm_eps", 1e-12);
  c.hidden_act = r.string("hidden_act", "gelu");
  c.type_vocab_size = r.integer("type_vocab_size", 2);
  c.pad_token_id = r.integer("pad_token_id", mt == "roberta" ? 1 : 0);
  c.problem_type = r.string("problem_type", "");
  c.attention_bias = true;
  c.o_proj_bias = true;
  c.mlp_bias = true;
  if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "relu") {
    r.fail("hidden_act", "\"" + c.hidden_act + "\" is not supported (supported: gelu, gelu_new, relu)");
  }
  if (r.string("position_embedding_type", "absolute") != "absolute") {
    r.fail("position_embedding_type", "only \"absolute\" is supported");
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    throw std::runtime_error(r.origin + ": hidden_size (" + std::to_string(c.hidden_size) +
                             ") is not a multiple of the number of heads (" +
                             std::to_string(c.num_attention_heads) + ")");
  }
}

}  // namespace

ModelFamily bert_family() {
  return {"bert", {"bert", "roberta"},
          "BertModel, BertForSequenceClassification (bert); RobertaModel, RobertaForSequenceClassification (roberta)",
          read_bert_config,
          [](const ModelConfig& c) -> std::shared_ptr<Model> { return std::make_shared<EncoderForClassification>(c); }};
}

}  // namespace peft
