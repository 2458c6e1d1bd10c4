# TAP output that also names each test file on stdout (`# file: tests/...`), so a results file
# alone tells which file, and therefore which area, every test belongs to.
# Written for the Lattice project (Apache-2.0).

package SyTest::Output::LatticeTAP;

use strict;
use warnings;

use base qw( SyTest::Output::TAP );

use constant FORMAT => "lattice-tap";

sub run_file
{
   my $class = shift;
   my ( $filename ) = @_;
   print "# file: $filename\n";
   $class->SUPER::run_file( @_ );
}

1;
