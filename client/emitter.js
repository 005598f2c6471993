// A small event emitter. `on("*", fn)` receives every event as fn(type, data).

export class Emitter {
  #handlers = new Map();

  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  once(type, fn) {
    const wrapper = (...args) => {
      this.off(type, wrapper);
      fn(...args);
    };
    return this.on(type, wrapper);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  /** Resolves with the next `type` event whose data passes `predicate`, or rejects after `timeout` ms. */
  waitFor(type, { predicate = () => true, timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(type, handler);
        reject(new Error(`no '${type}' event within ${timeout} ms`));
      }, timeout);
      const handler = (data) => {
        if (!predicate(data)) return;
        clearTimeout(timer);
        this.off(type, handler);
        resolve(data);
      };
      this.on(type, handler);
    });
  }

  /** Call the `type` subscribers with (...args) and the "*" subscribers with (type, ...args). */
  dispatch(type, ...args) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) this.#call(fn, ...args);
    for (const fn of [...(this.#handlers.get("*") ?? [])]) this.#call(fn, type, ...args);
  }

  #call(fn, ...args) {
    try {
      fn(...args);
    } catch (err) {
      // A broken subscriber must not stop the others; surface it where developers look.
      reportError(err);
    }
  }
}
