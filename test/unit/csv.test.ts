// Students in bulk: reading a CSV and a name pattern, and sorting rows into good and rejected ones.
import { expect } from 'chai';
import { SkyError } from '../../base/errors.ts';
import { checkStudentRows, MAX_ROWS, nameProblem, parseStudentCsv, patternRows } from '../../server/classes/import.ts';

describe('student import (CSV and pattern)', () => {
  describe('given a CSV', () => {
    it('should skip a header line, lowercase names and keep display names', () => {
      const rows = parseStudentCsv('Name,Display name\nAnna,Anna Berg\nben\n');
      expect(rows).to.deep.equal([{ line: 2, name: 'anna', displayName: 'Anna Berg' }, { line: 3, name: 'ben' }]);
    });

    it('should read ; and tab separated files, quoted cells and a byte order mark', () => {
      expect(parseStudentCsv('\uFEFFanna;"Berg; Anna"\r\nben;Ben')).to.deep.equal([
        { line: 1, name: 'anna', displayName: 'Berg; Anna' }, { line: 2, name: 'ben', displayName: 'Ben' }]);
      expect(parseStudentCsv('anna\tAnna "A" Berg\n')).to.deep.equal([{ line: 1, name: 'anna', displayName: 'Anna "A" Berg' }]);
      expect(parseStudentCsv('"anna","Anna ""Nan"" Berg"')[0]!.displayName).to.equal('Anna "Nan" Berg');
    });

    it('should keep empty lines in the middle as rows with a problem, and drop trailing ones', () => {
      const rows = parseStudentCsv('anna\n\n  \nben\n\n\n');
      expect(rows.map((r) => [r.line, r.problem ?? r.name])).to.deep.equal([[1, 'anna'], [2, 'empty line'], [3, 'empty line'], [4, 'ben']]);
    });

    it('should ignore trailing empty columns but reject a third column with text', () => {
      expect(parseStudentCsv('anna,Anna,,\n')[0]).to.deep.equal({ line: 1, name: 'anna', displayName: 'Anna' });
      expect(parseStudentCsv('anna,Anna,7b\n')[0]!.problem).to.match(/3 columns/);
    });

    it(`should refuse more than ${MAX_ROWS} rows (422 naming csv), and take exactly ${MAX_ROWS}`, () => {
      const names = (n: number) => Array.from({ length: n }, (_, i) => `s${i}`).join('\n');
      expect(parseStudentCsv(names(MAX_ROWS))).to.have.length(MAX_ROWS);
      expect(() => parseStudentCsv(names(MAX_ROWS + 1))).to.throw(SkyError).with.property('status', 422);
    });
  });

  describe('given rows to check', () => {
    it('should create the good rows and list the bad ones with a reason: duplicates, empty lines, markup, too long, taken', () => {
      const csv = ['name,display', 'anna,Anna', '', 'ben', '<b>eve</b>', 'anna,Anna again', 'x'.repeat(33), 'carl', 'has space', 'dora,<i>Dora</i>'].join('\n');
      const { good, rejected } = checkStudentRows(parseStudentCsv(csv), (n) => n === 'carl');
      expect(good).to.deep.equal([{ line: 2, name: 'anna', displayName: 'Anna' }, { line: 4, name: 'ben' }]);
      expect(rejected.map((r) => [r.line, r.reason])).to.deep.equal([
        [3, 'empty line'],
        [5, 'contains markup (< or >)'],
        [6, 'the same name as line 2'],
        [7, 'too long: at most 32 characters (it has 33)'],
        [8, 'a user with this name already exists'],
        [9, 'not a valid user name: use lowercase letters, digits, ".", "_" or "-", starting with a letter or digit'],
        [10, 'display name must be printable, without < or >'],
      ]);
    });

    it('should accept a name of 32 characters and refuse 33', () => {
      expect(nameProblem('a'.repeat(32))).to.equal(undefined);
      expect(nameProblem('a'.repeat(33))).to.match(/too long/);
    });
  });

  describe('given a pattern', () => {
    it('should make 7b-01 … 7b-30 from a prefix and a count', () => {
      const rows = patternRows('7b-', 30);
      expect(rows).to.have.length(30);
      expect([rows[0]!.name, rows[9]!.name, rows[29]!.name]).to.deep.equal(['7b-01', '7b-10', '7b-30']);
    });

    it('should pad to the width of the last number and start where asked', () => {
      expect(patternRows('lab', 3, 99).map((r) => r.name)).to.deep.equal(['lab099', 'lab100', 'lab101']);
      expect(patternRows('Q', 1).map((r) => r.name)).to.deep.equal(['q01']);
    });

    it('should refuse a count of 0 or over the limit, and a prefix that makes invalid names, naming the field', () => {
      for (const [fn, field] of [[() => patternRows('7b-', 0), 'count'], [() => patternRows('7b-', MAX_ROWS + 1), 'count'],
        [() => patternRows('<b>', 3), 'prefix'], [() => patternRows('', 3), 'prefix'], [() => patternRows('x'.repeat(31), 3), 'prefix']] as const) {
        try {
          fn();
          expect.fail('should have thrown');
        } catch (err) {
          expect((err as SkyError).status).to.equal(422);
          expect((err as SkyError).message).to.match(new RegExp(`^${field}:`));
        }
      }
      expect(patternRows('7b-', MAX_ROWS)).to.have.length(MAX_ROWS);
    });
  });
});
