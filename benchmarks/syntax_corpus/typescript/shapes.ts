/** Geometric shapes with a discriminated union. */

type Point = { x: number; y: number };

export type Shape =
  | { kind: "circle"; center: Point; radius: number }
  | { kind: "rect"; origin: Point; width: number; height: number }
  | { kind: "polygon"; points: Point[] };

export function area(shape: Shape): number {
  switch (shape.kind) {
    case "circle":
      return Math.PI * shape.radius ** 2;
    case "rect":
      return shape.width * shape.height;
    case "polygon": {
      let sum = 0;
      const pts = shape.points;
      for (let i = 0; i < pts.length; i++) {
        const a = pts[i];
        const b = pts[(i + 1) % pts.length];
        sum += a.x * b.y - b.x * a.y;
      }
      return Math.abs(sum) / 2;
    }
  }
}

export function boundingBox(shape: Shape): { min: Point; max: Point } {
  if (shape.kind === "circle") {
    const { center, radius } = shape;
    return {
      min: { x: center.x - radius, y: center.y - radius },
      max: { x: center.x + radius, y: center.y + radius },
    };
  }
  const points =
    shape.kind === "rect"
      ? [shape.origin, { x: shape.origin.x + shape.width, y: shape.origin.y + shape.height }]
      : shape.points;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  return {
    min: { x: Math.min(...xs), y: Math.min(...ys) },
    max: { x: Math.max(...xs), y: Math.max(...ys) },
  };
}

export function translate(shape: Shape, dx: number, dy: number): Shape {
  const move = (p: Point): Point => ({ x: p.x + dx, y: p.y + dy });
  switch (shape.kind) {
    case "circle":
      return { ...shape, center: move(shape.center) };
    case "rect":
      return { ...shape, origin: move(shape.origin) };
    default:
      return { ...shape, points: shape.points.map(move) };
  }
}

export function largest(shapes: Shape[]): Shape | undefined {
  let best: Shape | undefined;
  let bestArea = -Infinity;
  for (const shape of shapes) {
    const a = area(shape);
    if (a > bestArea) {
      best = shape;
      bestArea = a;
    }
  }
  return best;
}
