"""Embeds a text and an image through `biomedclip serve` with the official `openai` client,
unchanged, and prints the embeddings as JSON: {"text": [...], "image": [...]}.

Usage: python openai_client.py URL IMAGE TEXT
"""

import base64
import json
import sys

from openai import OpenAI


def main() -> None:
    url, image, text = sys.argv[1:4]
    # The server needs no key unless started with --api-key; the client insists on one.
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    texts = client.embeddings.create(model="biomedclip", input=[text])
    with open(image, "rb") as f:
        uri = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
    images = client.embeddings.create(
        model="biomedclip", input=[uri], extra_body={"modality": "image"}
    )
    print(json.dumps({"text": texts.data[0].embedding, "image": images.data[0].embedding}))


if __name__ == "__main__":
    main()
