export default async (_argv: string[]): Promise<number> => 0;
