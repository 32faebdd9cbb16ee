/** The placeholders the shipped workflows (workflows/*.json) hold, which tests and the demo replace. */
export const SHIPPED_DEST = '/mnt/storage/backups/vm_backups';
export const SHIPPED_OFFSITE = '/mnt/offsite/vm_backups';
export const SHIPPED_HOOK = 'https://chat.example.com/hooks/REPLACE_WITH_YOUR_WEBHOOK';
export const SHIPPED_OVERLAYS = '/var/lib/libvirt/images/restore-drill';
/** The header the "Backup webhook token" credential (httpHeaderAuth) checks. */
export const TOKEN_HEADER = 'X-Backup-Token';
