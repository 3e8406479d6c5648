// What a JDBC tool such as DBeaver does on connect, then a parameterised query on a masked
// table: run by tests/test_native_jdbc.py through the bastion with Debian's JDBC drivers.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public final class NativeClient {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        String table = args[1];
        Properties props = new Properties();
        props.setProperty("user", "alice");
        props.setProperty("password", "ignored-by-the-bastion");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData meta = conn.getMetaData();
            System.out.println("product " + meta.getDatabaseProductName());
            try (ResultSet tables = meta.getTables(conn.getCatalog(), null, "%", new String[] {"TABLE", "VIEW"})) {
                while (tables.next()) {
                    System.out.println("table " + tables.getString("TABLE_NAME"));
                }
            }
            try (ResultSet columns = meta.getColumns(conn.getCatalog(), null, table, "%")) {
                while (columns.next()) {
                    System.out.println("column " + columns.getString("COLUMN_NAME"));
                }
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT id, name, ssn, email FROM " + table + " WHERE id > ? ORDER BY id")) {
                for (int round = 0; round < 7; round++) {  // pgjdbc switches to a server-side statement at 5
                    ps.setInt(1, 0);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            if (round == 6) {
                                System.out.println("row " + rs.getInt(1) + "|" + rs.getString(2) + "|"
                                        + rs.getString(3) + "|" + rs.getString(4));
                            }
                        }
                    }
                }
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT LOAD_FILE('/etc/passwd'), pg_read_file('/etc/passwd')");
                System.out.println("refusal missing");
            } catch (SQLException e) {
                System.out.println("refused " + e.getMessage().replace('\n', ' '));
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 6 * 7")) {
                rs.next();
                System.out.println("after " + rs.getInt(1));
            }
        }
    }
}
