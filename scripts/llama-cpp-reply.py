# The reply llama.cpp itself gives to one user message, greedily, with a GGUF base and an optional
# GGUF LoRA adapter: `python scripts/llama-cpp-reply.py BASE.gguf [ADAPTER.gguf] < message` (the demo's proof).
import sys

from llama_cpp import Llama


def main(argv):
    if len(argv) not in (1, 2):
        sys.exit("usage: llama-cpp-reply.py BASE.gguf [ADAPTER.gguf] < message")
    llm = Llama(model_path=argv[0], lora_path=argv[1] if len(argv) > 1 else None, n_ctx=1024, n_threads=2,
                seed=1, verbose=False)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": sys.stdin.read()}], max_tokens=48,
                                     temperature=0.0)
    print(out["choices"][0]["message"]["content"])


if __name__ == "__main__":
    main(sys.argv[1:])
