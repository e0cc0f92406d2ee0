"""The registry's wiring: what it accepts, answers and emits. Declarations only; see `shared.kit`."""

from __future__ import annotations

from services.registry.adapters.desired_kv import KvDeviceGrants
from services.registry.adapters.nats_kv import KvRecordStore
from services.registry.domain import Admission
from services.registry.service import RegistryService
from services.registry.settings import RegistrySettings
from shared import topology
from shared.artifacts import ArtifactStore
from shared.kit import Runtime, ServiceKit
from shared.messages.registry import (
    GET_ALIASES,
    GET_DOWNLOAD_URL,
    GET_MODEL,
    GET_PUBLIC_KEY,
    LIST_MODELS,
    AliasChanged,
    ModelRegistered,
    RegisterModel,
    RegisterVariant,
    SetAlias,
    VariantRegistered,
)
from shared.settings import load_settings
from shared.signing import load_or_create_private_key

SERVICE = "registry"


def declare(settings: RegistrySettings | None = None) -> ServiceKit[RegistryService]:
    settings = settings or load_settings(RegistrySettings)

    async def build(runtime: Runtime) -> RegistryService:
        return RegistryService(
            store=KvRecordStore(
                await runtime.js.key_value(topology.KV_MODELS), js=runtime.js, bucket=topology.KV_MODELS
            ),
            grants=KvDeviceGrants(await runtime.js.key_value(topology.KV_DESIRED)),
            blobs=ArtifactStore.from_settings(settings, presign_ttl=settings.presign_ttl),
            signing_key=load_or_create_private_key(settings.signing_key_file),
            admission=Admission(
                allowed_buckets=settings.registry_allowed_buckets,
                eval_set_max_decompressed_bytes=settings.registry_eval_set_max_decompressed_bytes,
            ),
        )

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        description="Immutable, signed model versions and variants with lineage, and aliases with history.",
    )
    kit.commands(
        topology.REGISTRY_COMMANDS,
        {
            RegisterModel: RegistryService.register_model,
            RegisterVariant: RegistryService.register_variant,
            SetAlias: RegistryService.set_alias,
        },
    )
    kit.rpc(LIST_MODELS, lambda registry, request: registry.list_models(request.name))
    kit.rpc(GET_MODEL, lambda registry, request: registry.get_model(request.name, request.ref))
    kit.rpc(GET_ALIASES, lambda registry, request: registry.aliases(request.name))
    kit.device_rpc(
        GET_DOWNLOAD_URL, lambda registry, request, device: registry.download_url(request.digest, device_id=device)
    )
    kit.rpc(GET_PUBLIC_KEY, lambda registry, _: registry.public_key())
    kit.emits(ModelRegistered, VariantRegistered, AliasChanged)
    kit.writes(topology.KV_MODELS)
    kit.reads(topology.KV_DESIRED)
    return kit
