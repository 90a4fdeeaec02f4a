import type { Models, TrafficPoint } from "./api.js";

/** The last points kept for the Traffic charts: 10 minutes at one a second. */
export const maxPoints = 600;

type Listener = () => void;

/** What the traffic stream last said: the models, and the last traffic points. Pages subscribe. */
export class Store {
  models: Models | undefined;
  readonly points: TrafficPoint[] = [];
  /** The stream's last problem, until it works again. */
  problem: string | undefined;
  private readonly listeners = new Set<Listener>();

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  setModels(m: Models): void {
    this.models = m;
    this.problem = undefined;
    this.emit();
  }

  addPoint(p: TrafficPoint): void {
    this.points.push(p);
    if (this.points.length > maxPoints) this.points.splice(0, this.points.length - maxPoints);
    this.emit();
  }

  setProblem(text: string): void {
    this.problem = text;
    this.emit();
  }

  private emit(): void {
    for (const l of this.listeners) l();
  }
}
