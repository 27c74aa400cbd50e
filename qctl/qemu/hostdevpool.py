"""``<interface type='network'>`` on a hostdev pool: one of the pool's devices, with VFIO.

A hostdev pool (``<forward mode='hostdev'>``) hands each such interface a device of its
own (an SR-IOV VF). The live definition shows the interface as ``type='hostdev'`` on that
device, with the pool's ``managed=`` and VLAN (unless the interface has its own VLAN), and
the ledger entry's ``pool`` field records the allocation, so releasing the device returns
it to the pool. :func:`pool_interface` is that rewrite (hot-plug uses it too);
:func:`take_pool_devices` does it for every such interface of a domain being started.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import field

from qctl.conf import (
    DeviceDef,
    DomainDef,
    ForwardMode,
    InterfaceDef,
    InterfaceSourceDef,
    InterfaceType,
    NetworkDef,
    RawXML,
)
from qctl.errors import HostError, StateError
from qctl.qemu.network import NetworkStore
from qctl.qemu.plan import located
from qctl.record import record
from qctl.types import PCIAddress

__all__ = ["PooledDomain", "hostdev_pool", "pool_interface", "take_pool_devices"]


@record(frozen=False)
class PooledDomain:
    """The domain with its pool interfaces rewritten, and each one's allocation by alias."""

    domain: DomainDef
    pools: dict[str, tuple[str, str]] = field(default_factory=dict)


def hostdev_pool(iface: InterfaceDef, networks: NetworkStore) -> NetworkDef | None:
    """The hostdev pool a ``type='network'`` interface draws from (``None``: not one)."""
    if iface.type is not InterfaceType.NETWORK or iface.source is None:
        return None
    if iface.source.network is None:
        return None
    network = networks.get(iface.source.network)
    forward = network.forward
    return network if forward is not None and forward.mode is ForwardMode.HOSTDEV else None


def pool_interface(iface: InterfaceDef, network: NetworkDef, device: str) -> InterfaceDef:
    """``iface`` as the live XML shows it once pool ``network`` gave it ``device``.

    Emulated-NIC settings (model, driver) do not apply to a passed-through device; the
    interface's own VLAN wins over the pool's, as in libvirt.
    """
    assert network.forward is not None
    return dataclasses.replace(
        iface,
        type=InterfaceType.HOSTDEV,
        source=InterfaceSourceDef(pci=PCIAddress.parse(device)),
        managed=network.forward.managed,
        model=None,
        driver=None,
        vlan=iface.vlan or network.vlan,
    )


async def take_pool_devices(
    domain: DomainDef, stack: contextlib.AsyncExitStack, networks: NetworkStore
) -> PooledDomain:
    """Allocate a device for every interface of the planned ``domain`` on a hostdev pool and
    rewrite it (:func:`pool_interface`); each allocation's release goes on ``stack``.

    A missing pool or an exhausted one is raised naming the interface's file and line (a
    broken pool definition names its own).
    """
    result = PooledDomain(domain)
    items: list[DeviceDef | RawXML] = []
    for item in domain.devices.items:
        if isinstance(item, InterfaceDef):
            try:
                network = hostdev_pool(item, networks)
                if network is not None:
                    assert item.alias is not None
                    device = await networks.allocate(network.name, domain.name, item.alias)
                    stack.push_async_callback(
                        networks.release,
                        network.name,
                        device,
                        domain=domain.name,
                        alias=item.alias,
                    )
                    result.pools[item.alias] = (network.name, device)
                    item = pool_interface(item, network, device)
            except (StateError, HostError) as exc:
                raise located(exc, domain.source, item) from exc
        items.append(item)
    result.domain = dataclasses.replace(
        domain, devices=dataclasses.replace(domain.devices, items=tuple(items))
    )
    return result
