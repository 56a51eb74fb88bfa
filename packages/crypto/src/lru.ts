/** A small bounded map that evicts the least recently used entry. */
export class LruCache<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, V>();
  /** The most recently used key, already last in the map: getting it again reorders nothing. */
  #newest: K | undefined;

  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined && key !== this.#newest) {
      this.#map.delete(key);
      this.#map.set(key, value);
      this.#newest = key;
    }
    return value;
  }

  set(key: K, value: V): void {
    if (this.#max <= 0) return;
    this.#map.delete(key);
    this.#map.set(key, value);
    this.#newest = key;
    if (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next();
      if (oldest.done !== true) this.#map.delete(oldest.value);
    }
  }

  delete(key: K): void {
    if (key === this.#newest) this.#newest = undefined;
    this.#map.delete(key);
  }
}
