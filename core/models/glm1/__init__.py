"""ChatGLM-6B ("GLM v1") as a native transformers model, registered with the Auto classes on import.

Importing this package is what lets `AutoConfig` / `AutoModelForCausalLM.from_pretrained(folder)` load a folder
written by `core.models.chatglm_v1.convert_chatglm_v1` without trust_remote_code: its config.json names our own
model_type, "glm1_workbench", never THUDM's "chatglm" (whose code we do not run).
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from core.models.glm1.configuration import MODEL_TYPE, Glm1Config
from core.models.glm1.modeling import LINEAR_MODULES, Glm1ForCausalLM, Glm1Model, Glm1PreTrainedModel

AutoConfig.register(MODEL_TYPE, Glm1Config, exist_ok=True)
AutoModel.register(Glm1Config, Glm1Model, exist_ok=True)
AutoModelForCausalLM.register(Glm1Config, Glm1ForCausalLM, exist_ok=True)

__all__ = ["MODEL_TYPE", "LINEAR_MODULES", "Glm1Config", "Glm1Model", "Glm1ForCausalLM", "Glm1PreTrainedModel"]
