"""The OpenAI Files + Batches API (and every provider that copies it) behind four small calls."""

from __future__ import annotations

from typing import Any, Protocol


class BatchAPI(Protocol):
    """What the runner needs of a provider's batch service, for one endpoint and one key."""

    endpoint: str

    async def upload(self, content: bytes, filename: str) -> str: ...

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]: ...

    async def retrieve(self, batch_id: str) -> dict[str, Any]: ...

    async def find(self, input_file_id: str) -> dict[str, Any] | None: ...

    async def content(self, file_id: str) -> bytes: ...

    async def aclose(self) -> None: ...


class OpenAIBatchAPI:
    """``/v1/files`` and ``/v1/batches`` through the openai SDK (auth, URLs and errors are the SDK's)."""

    def __init__(self, *, base_url: str | None, api_key: str, endpoint: str = "/v1/chat/completions",
                 timeout_s: float = 120.0):
        import openai

        self.endpoint = endpoint
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=3)

    async def upload(self, content: bytes, filename: str) -> str:
        created = await self._client.files.create(file=(filename, content), purpose="batch")
        return created.id

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        batch = await self._client.batches.create(
            input_file_id=input_file_id, endpoint=self.endpoint, completion_window="24h", metadata=metadata
        )
        return batch.model_dump()

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return (await self._client.batches.retrieve(batch_id)).model_dump()

    async def find(self, input_file_id: str) -> dict[str, Any] | None:
        """The batch created from this input file, if any (looked up after a crash between create and journal)."""
        seen = 0
        async for batch in self._client.batches.list(limit=100):  # newest first
            if batch.input_file_id == input_file_id:
                return batch.model_dump()
            seen += 1
            if seen >= 2_000:
                break
        return None

    async def content(self, file_id: str) -> bytes:
        return (await self._client.files.content(file_id)).content

    async def aclose(self) -> None:
        await self._client.close()
