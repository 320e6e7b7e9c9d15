// A priority queue and a rate-limited task runner.

export interface Task<T> {
  id: string;
  priority: number;
  run: () => Promise<T>;
}

export class PriorityQueue<T> {
  private heap: T[] = [];

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.heap.length;
  }

  push(value: T): void {
    this.heap.push(value);
    let i = this.heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(this.heap[i], this.heap[parent])) {
        break;
      }
      [this.heap[i], this.heap[parent]] = [this.heap[parent], this.heap[i]];
      i = parent;
    }
  }

  pop(): T | undefined {
    if (this.heap.length === 0) {
      return undefined;
    }
    const top = this.heap[0];
    const last = this.heap.pop() as T;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(i: number): void {
    const n = this.heap.length;
    for (;;) {
      let best = i;
      for (const child of [2 * i + 1, 2 * i + 2]) {
        if (child < n && this.before(this.heap[child], this.heap[best])) {
          best = child;
        }
      }
      if (best === i) return;
      [this.heap[i], this.heap[best]] = [this.heap[best], this.heap[i]];
      i = best;
    }
  }
}

export async function runAll<T>(tasks: Task<T>[], perSecond: number): Promise<Map<string, T>> {
  const queue = new PriorityQueue<Task<T>>((a, b) => a.priority > b.priority);
  tasks.forEach((task) => queue.push(task));
  const results = new Map<string, T>();
  const gap = 1000 / perSecond;
  while (queue.size > 0) {
    const task = queue.pop()!;
    const started = Date.now();
    results.set(task.id, await task.run());
    const elapsed = Date.now() - started;
    if (elapsed < gap) {
      await new Promise((resolve) => setTimeout(resolve, gap - elapsed));
    }
  }
  return results;
}
