// Which storage each VM disk goes on: the provider data's CEL selectors evaluated against one node's storages.
import { compileSelector, selectStorage, SelectorError, type StorageFacts } from '../cel/index.js';
import type { Logger } from '../log.js';
import type { ProviderData } from './providerData.js';

/** A selector failed; the message starts with the provider-data field (`storage_selector: …`). */
export class DiskStorageError extends Error {
  override readonly name = 'DiskStorageError';
  readonly field: string;
  constructor(field: string, cause: SelectorError) {
    super(`${field}: ${cause.message}`, { cause });
    this.field = field;
  }
}

/** Storage ids for the system disk and each additional disk (an additional disk without a selector uses the main one). */
export function selectDiskStorages(
  data: ProviderData,
  storages: readonly StorageFacts[],
  node: string,
  logger?: Logger,
): { primary: string; additional: string[] } {
  const select = (field: string, expr: string): string => {
    try {
      return selectStorage(compileSelector(expr), storages, node, logger ? { logger } : {}).storage;
    } catch (err) {
      if (err instanceof SelectorError) throw new DiskStorageError(field, err);
      throw err;
    }
  };
  return {
    primary: select('storage_selector', data.storage_selector),
    additional: data.additional_disks.map((d, i) =>
      select(`additional_disks[${i}].storage_selector`, d.storage_selector || data.storage_selector),
    ),
  };
}
