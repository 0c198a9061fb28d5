"""Class-based actors (Dramatiq's ``GenericActor``).

    class Resize(GenericActor):
        class Meta:
            topic = "images"
            max_retries = 5

        def perform(self, image_id: str) -> None: ...

    Resize.send("a1")

A subclass is replaced by an instance bound to an :class:`~broker.actor.Actor` (its name the
class's, its options the ``Meta`` attributes); attributes the class lacks come from the actor
(``Resize.send``, ``Resize.topic``). ``abstract = True`` in ``Meta`` keeps a base class a class,
for others to derive from; ``actor`` in ``Meta`` replaces the decorator that registers it.
"""

from __future__ import annotations

from typing import Any

from broker.actor import actor


class _GenericActorType(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        cls = super().__new__(mcs, name, bases, attrs)
        meta = attrs.get("Meta")
        if meta is not None and vars(meta).get("abstract", False):
            return cls
        inherited = getattr(cls, "Meta", None)
        options = {
            key: value
            for source in ([inherited] if inherited is not None else [])
            for key, value in _meta_options(source).items()
        }
        register = options.pop("actor", actor)
        instance = cls()
        instance.__actor__ = register(instance, **options)
        return instance

    def __getattr__(cls, name: str) -> Any:
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")


def _meta_options(meta: type) -> dict[str, Any]:
    """``Meta``'s options, a derived ``Meta`` overriding the ones it inherits; ``abstract`` is not one."""
    options: dict[str, Any] = {}
    for klass in reversed(meta.__mro__):
        if klass is object:
            continue
        options.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
    options.pop("abstract", None)
    return options


class GenericActor(metaclass=_GenericActorType):
    """Derive from it and implement :meth:`perform`; see the module's docstring."""

    class Meta:
        abstract = True

    @property
    def __name__(self) -> str:
        # the class's name: type's own __name__ (a data descriptor on the metaclass) wins over this property
        return type(self).__name__  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        bound = self.__dict__.get("__actor__")
        if bound is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(bound, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.perform(*args, **kwargs)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        """The actor's work. Every non-abstract subclass implements it."""
        raise NotImplementedError(f"{self.__name__} does not implement perform()")
