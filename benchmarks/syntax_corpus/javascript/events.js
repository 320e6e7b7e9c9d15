// A tiny event emitter, a debounce helper and a retrying fetch.

export class Emitter {
  #handlers = new Map();

  on(name, handler) {
    if (!this.#handlers.has(name)) {
      this.#handlers.set(name, new Set());
    }
    this.#handlers.get(name).add(handler);
    return () => this.off(name, handler);
  }

  off(name, handler) {
    const set = this.#handlers.get(name);
    if (set) {
      set.delete(handler);
    }
  }

  emit(name, ...args) {
    const set = this.#handlers.get(name);
    if (!set) return 0;
    for (const handler of [...set]) {
      try {
        handler(...args);
      } catch (err) {
        console.error(`handler for ${name} failed`, err);
      }
    }
    return set.size;
  }
}

export function debounce(fn, wait = 100) {
  let timer = null;
  return function debounced(...args) {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn.apply(this, args);
    }, wait);
  };
}

export async function fetchWithRetry(url, { retries = 3, delay = 200 } = {}) {
  let lastError;
  for (let attempt = 0; attempt <= retries; attempt++) {
    try {
      const response = await fetch(url);
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
      return await response.json();
    } catch (err) {
      lastError = err;
      await new Promise((resolve) => setTimeout(resolve, delay * 2 ** attempt));
    }
  }
  throw lastError;
}

export function groupBy(items, key) {
  const groups = {};
  for (const item of items) {
    const k = typeof key === 'function' ? key(item) : item[key];
    (groups[k] ||= []).push(item);
  }
  return groups;
}
