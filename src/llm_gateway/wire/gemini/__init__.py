"""Gemini generateContent: upstream translation and stream decoding (no client speaks it here)."""
