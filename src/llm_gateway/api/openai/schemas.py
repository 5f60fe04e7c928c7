"""Request schemas shown in the gateway's OpenAPI document. The endpoints
validate by hand (faster, and with OpenAI's error wording); these describe
the same contract for readers and client generators."""

from __future__ import annotations

from typing import Any

_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object"}},
                {"type": "null"},
            ]
        },
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "CreateChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model name configured in the gateway."},
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "seed": {"type": "integer"},
            "n": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "parallel_tool_calls": {"type": "boolean"},
            "response_format": {"type": "object"},
        },
        "additionalProperties": True,
    },
    "CreateEmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                    {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1,
                                                               "items": {"type": "integer"}}},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
        },
    },
}


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_ERROR_RESPONSE = {
    "description": "An error, in OpenAI's shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}
_TAGS = ["OpenAI-compatible"]

OPENAPI_SCHEMAS["ErrorResponse"] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/chat/completions": {
        "post": {
            "tags": _TAGS,
            "summary": "Create a chat completion (OpenAI Chat Completions API), streaming or not",
            "operationId": "createChatCompletion",
            "requestBody": _json_body("CreateChatCompletionRequest"),
            "responses": {
                "200": {
                    "description": "A chat.completion object, or with stream=true an SSE stream of "
                    "chat.completion.chunk objects ending with data: [DONE]",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                "default": _ERROR_RESPONSE,
            },
        }
    },
    "/v1/embeddings": {
        "post": {
            "tags": _TAGS,
            "summary": "Create embeddings (OpenAI Embeddings API)",
            "operationId": "createEmbedding",
            "requestBody": _json_body("CreateEmbeddingRequest"),
            "responses": {
                "200": {"description": "A list of embedding objects", "content": {"application/json": {}}},
                "default": _ERROR_RESPONSE,
            },
        }
    },
    "/v1/models": {
        "get": {
            "tags": _TAGS,
            "summary": "List the models this caller may use",
            "operationId": "listModels",
            "responses": {
                "200": {"description": "A list of model objects", "content": {"application/json": {}}},
                "default": _ERROR_RESPONSE,
            },
        }
    },
    "/v1/models/{model_id}": {
        "get": {
            "tags": _TAGS,
            "summary": "Retrieve one model",
            "operationId": "retrieveModel",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "A model object", "content": {"application/json": {}}},
                "default": _ERROR_RESPONSE,
            },
        }
    },
}

OPENAPI_SCHEMAS["CreateMessageRequest"] = {
    "type": "object",
    "required": ["model", "messages"],
    "description": "An Anthropic Messages API request, answered by any configured model.",
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "A model name configured in the gateway."},
        "messages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
                            "description": "Text, image, tool_use and tool_result blocks"},
            }}},
        "max_tokens": {"type": "integer", "minimum": 1,
                       "description": "Optional here; the model's max_output_tokens when absent"},
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "stream": {"type": "boolean", "default": False},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
        "tools": {"type": "array", "items": {"type": "object", "required": ["name", "input_schema"]}},
        "tool_choice": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
            "name": {"type": "string"}, "disable_parallel_tool_use": {"type": "boolean"}}},
        "output_config": {"type": "object", "properties": {"format": {
            "type": "object", "required": ["type", "schema"],
            "properties": {"type": {"const": "json_schema"}, "schema": {"type": "object"}}}}},
    },
}

OPENAPI_PATHS["/v1/messages"] = {
    "post": {
        "tags": ["Anthropic-compatible"],
        "summary": "Create a message (Anthropic Messages API) with any configured model, streaming or not",
        "description": "The credential may be sent as x-api-key, as Anthropic's SDKs do, or as a bearer token. "
        "Errors have the gateway's error shape with \"type\": \"error\" added.",
        "operationId": "createMessage",
        "requestBody": _json_body("CreateMessageRequest"),
        "responses": {
            "200": {
                "description": "A message object, or with stream=true an SSE stream of message_start, "
                "content_block_start/delta/stop, message_delta and message_stop events",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            "default": _ERROR_RESPONSE,
        },
    }
}

OPENAPI_PATHS["/v1/messages/count_tokens"] = {
    "post": {
        "tags": ["Anthropic-compatible"],
        "summary": "Count the input tokens of a Messages request",
        "description": "Counted by the model's Anthropic deployment when it has one "
        "(x-gateway-token-count: exact), else estimated by the gateway (estimate). Not billed, not rate limited.",
        "operationId": "countMessageTokens",
        "requestBody": _json_body("CreateMessageRequest"),
        "responses": {
            "200": {"description": "{\"input_tokens\": n}", "content": {"application/json": {}}},
            "default": _ERROR_RESPONSE,
        },
    }
}
