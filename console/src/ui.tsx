// Small pieces the views share.

/** A table's header row: `#Name` is a numeric column (right-aligned), `!Name` is read to screen readers only. */
export function TableHead({ columns }: { columns: string[] }) {
  return (
    <thead>
      <tr>
        {columns.map((c) =>
          c.startsWith('!') ? (
            <th key={c} scope="col">
              <span class="sr-only">{c.slice(1)}</span>
            </th>
          ) : (
            <th key={c} scope="col" class={c.startsWith('#') ? 'num' : undefined}>
              {c.replace(/^#/, '')}
            </th>
          ),
        )}
      </tr>
    </thead>
  );
}
