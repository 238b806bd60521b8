"""The tool settings' records: one MCP server (`[[mcp_servers]]`) and one tenant's tool
allow-list (`[tenants.NAME]`); `tether.config.Settings` holds lists of them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class McpServerConfig(BaseModel):
    """One MCP server (`[[mcp_servers]]`, or one object of `TETHER_MCP_SERVERS`): docs/tools.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    command: list[str] | None = Field(None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = None  # an allow-list of the server's tool names
    approval: Literal["never", "always"] | list[str] = "never"
    timeout: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.name!r}: give either `command` or `url`")
        return self

    def needs_approval(self, tool: str) -> bool:
        listed = isinstance(self.approval, list)
        return tool in self.approval if listed else self.approval == "always"


class TenantConfig(BaseModel):
    """`[tenants.NAME]` in the config file: the server tools it may use (`tools`, None: all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tools: list[str] | None = None
