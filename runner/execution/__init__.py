"""Running requests: the library's run entry, the scheduling loop and its policies (retry,
rate gate, spending cap, inputs as validated), the fal API client, uploads and image saving."""
