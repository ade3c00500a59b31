// Run once per runtime, before the user's code: makes the shared environment immutable so that
// nothing one event does to it can be seen by the next (see `sandbox.rs`, "Isolation").
(function lockdown() {
  "use strict";

  // Not ECMAScript: a host hook QuickJS puts in every context. Jobs are drained after each event
  // anyway, but the sandbox offers only the language's own globals.
  delete globalThis.queueMicrotask;

  // The "override mistake": once a prototype is frozen, `obj.name = x` fails when the prototype
  // has a read-only `name`, even though `obj` is the user's own object. Common patterns hit it
  // (`this.name = "MyError"` in an Error subclass, `Foo.prototype.toString = …`), so these
  // properties become accessors whose setter defines an own property on the receiver instead.
  const tame = (proto, names) => {
    for (const name of names) {
      const desc = Object.getOwnPropertyDescriptor(proto, name);
      if (!desc || !("value" in desc) || !desc.writable) continue;
      const value = desc.value;
      Object.defineProperty(proto, name, {
        get() {
          return value;
        },
        set(newValue) {
          if (this === proto) {
            throw new TypeError(
              `Cannot assign to read only property '${String(name)}' of a built-in prototype`,
            );
          }
          Object.defineProperty(this, name, {
            value: newValue,
            writable: true,
            enumerable: true,
            configurable: true,
          });
        },
        enumerable: desc.enumerable,
        configurable: false,
      });
    }
  };
  tame(Object.prototype, Reflect.ownKeys(Object.prototype));
  const errors = [
    Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
    AggregateError,
  ];
  if (typeof InternalError === "function") errors.push(InternalError);
  if (typeof SuppressedError === "function") errors.push(SuppressedError);
  for (const E of errors) tame(E.prototype, ["name", "message", "constructor", "toString"]);

  // Everything reachable from the global object, plus the intrinsics only reachable through
  // syntax (generator, async and iterator prototypes), is frozen: properties, prototypes,
  // accessor functions.
  const roots = [globalThis];
  const hidden = [
    () => Object.getPrototypeOf(function* () {}),
    () => Object.getPrototypeOf(async function () {}),
    () => Object.getPrototypeOf(async function* () {}),
    () => Object.getPrototypeOf([][Symbol.iterator]()),
    () => Object.getPrototypeOf(new Map()[Symbol.iterator]()),
    () => Object.getPrototypeOf(new Set()[Symbol.iterator]()),
    () => Object.getPrototypeOf(""[Symbol.iterator]()),
    () => Object.getPrototypeOf(/a/[Symbol.matchAll]("a")),
    () => Object.getPrototypeOf(Iterator.from({ next() {} })),
    () => Object.getPrototypeOf([].values().map((x) => x)),
    () => Object.getPrototypeOf((function () { return arguments; })()),
  ];
  for (const get of hidden) {
    try {
      roots.push(get());
    } catch (_) {
      // An intrinsic this engine version lacks: nothing to freeze.
    }
  }
  const seen = new Set();
  const stack = roots;
  while (stack.length > 0) {
    const object = stack.pop();
    if ((typeof object !== "object" && typeof object !== "function") || object === null) continue;
    if (seen.has(object)) continue;
    seen.add(object);
    for (const key of Reflect.ownKeys(object)) {
      const desc = Object.getOwnPropertyDescriptor(object, key);
      if ("value" in desc) {
        stack.push(desc.value);
      } else {
        stack.push(desc.get, desc.set);
      }
    }
    stack.push(Object.getPrototypeOf(object));
    Object.freeze(object);
  }
})();
