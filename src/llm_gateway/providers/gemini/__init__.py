"""Google Gemini API (generateContent, streamGenerateContent, batchEmbedContents).

``to_wire`` / ``from_wire`` / ``stream`` are pure translations between the
canonical types and Gemini's wire format; ``adapter`` and ``images`` do the I/O.
"""
