"""FedPEFT: first-order PEFT adapters (LoRA, IA3, BitFit, ...) averaged by FedAvg or exact LoRA merging."""
